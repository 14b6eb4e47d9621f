"""The help screen (`?` or F1): the keys of the screen in front, from the bindings in effect, and what
the screen is for; and remembered settings (theme, the launch form's last values, the Probes runs)."""

from __future__ import annotations

import json
import os

from textual.widgets import Input, SelectionList

from factrecall_tui.help import HelpScreen
from factrecall_tui.launch import LaunchScreen
from factrecall_tui.probes import ProbesPane
from factrecall_tui.remembered import Remembered, default_path
from tests.tui.helpers import settle
from tests.tui.test_review import drive
from tests.tui.workspace import _store, fixed_workspace


def _listed(screen: HelpScreen) -> dict[str, dict[str, str]]:
    return {g.title: {k.keys: k.description for k in g.keys} for g in screen.groups}


def test_help_lists_the_keys_of_the_screen_in_front_and_closes(tmp_path):
    async def script(app, pilot):
        await pilot.press("question_mark")
        await settle(pilot, until=lambda: isinstance(app.screen, HelpScreen), what="the help")
        jobs = _listed(app.screen)
        assert app.screen.title_text == "Keys · Jobs" and "selected one" in app.screen.about
        assert {"c": "Cancel", "r": "Resume", "l": "Log"}.items() <= jobs["Jobs"].items()
        # Hidden keys too: the tabs' numbers are not in the footer but are keys all the same.
        assert {"n": "New job", "q": "Quit", "1": "Jobs", "5": "Report"}.items() <= jobs["Everywhere"].items()
        assert "The table" in jobs  # the focused table's own keys (its cursor)
        await pilot.press("escape")
        await settle(pilot, until=lambda: not isinstance(app.screen, HelpScreen), what="the help to close")

        await pilot.press("3", "f1")  # another tab: its own keys, not the Jobs screen's
        await settle(pilot, until=lambda: isinstance(app.screen, HelpScreen), what="the Probes help")
        probes = _listed(app.screen)
        assert app.screen.title_text == "Keys · Probes" and "sample std" in app.screen.about
        assert {"f": "Fit", "a": "Attribute", "w": "Probes shown"}.items() <= probes["Probes"].items()
        assert "Jobs" not in probes and "c" not in probes.get("Jobs", {})
        await pilot.press("f1")  # the key that opened it closes it
        await settle(pilot, until=lambda: not isinstance(app.screen, HelpScreen), what="the help to close")

        await pilot.press("1", "n")  # a pushed screen: its keys and its purpose
        await settle(pilot, until=lambda: isinstance(app.screen, LaunchScreen), what="the launch form")
        await pilot.press("f1")
        await settle(pilot, until=lambda: isinstance(app.screen, HelpScreen), what="the form's help")
        form = _listed(app.screen)
        assert app.screen.title_text == "Keys · New job"
        assert form["This screen (Launch)"]["^s"] == "Launch"
        await pilot.press("escape")  # closes the help, not the form
        await settle(pilot, until=lambda: isinstance(app.screen, LaunchScreen), what="back to the form")
        # In a text field `?` is a character, not a key for help.
        app.screen.query_one("#settings", Input).focus()
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, LaunchScreen) and app.screen.query_one("#settings", Input).value == "?"

    drive(fixed_workspace(tmp_path / "ws"), (120, 36), script)


def test_settings_are_remembered_across_sessions_and_a_damaged_file_is_moved_aside(tmp_path):
    """Theme and the Probes runs (per workspace) come back in the next session; a config file that is
    not JSON is moved aside with one notification, and the app starts from its defaults."""
    ws = fixed_workspace(tmp_path / "ws")
    _store(ws / "runs" / "cpu-stage+mix-s1")  # a second run to probe
    config = default_path()
    assert str(config).startswith(os.environ["XDG_CONFIG_HOME"])  # the suite's own folder, never the machine's

    async def first(app, pilot):
        assert not config.exists() and app.theme != "nord"
        probes = app.query_one(ProbesPane)
        default = probes.selected_runs()
        assert len(default) == 1  # the newest run with a store, until the researcher chooses
        await pilot.press("3")
        box = app.query_one("#probe-runs", SelectionList)
        other = next(n for n in probes.runs if n not in default)
        box.select(other)  # as a click or space would
        await settle(pilot, until=lambda: len(probes.selected_runs()) == 2, what="two runs chosen")
        app.theme = "nord"
        await settle(pilot)
        return probes.selected_runs()

    chosen = drive(ws, (120, 36), first)
    saved = json.loads(config.read_text())
    assert saved["theme"] == "nord" and saved["probes"] == {str(ws.resolve()): chosen}

    async def second(app, pilot):
        probes = app.query_one(ProbesPane)
        await settle(pilot, until=lambda: probes.selected_runs(), what="the Probes runs")
        return app.theme, probes.selected_runs()

    assert drive(ws, (120, 36), second) == ("nord", chosen)
    # Another workspace does not inherit this one's runs (it has its own, or the newest).
    other_ws = fixed_workspace(tmp_path / "other")
    theme, runs = drive(other_ws, (120, 36), second)
    assert theme == "nord" and len(runs) == 1

    config.write_text('{"theme": "nord", "probes": ')  # a crash of some other program, a bad edit
    notes = []

    async def damaged(app, pilot):
        await settle(pilot)
        notes.extend(n.message for n in app._notifications)
        return app.theme

    assert drive(ws, (120, 36), damaged) != "nord"
    assert any("were damaged: moved to tui.json.bad" in n for n in notes), notes
    assert config.with_name("tui.json.bad").read_text() == '{"theme": "nord", "probes": '


def test_remembered_values_of_the_wrong_type_are_ignored_and_an_unwritable_folder_only_costs_the_remembering(tmp_path):
    path = tmp_path / "tui.json"
    path.write_text(
        json.dumps(
            {
                "theme": 3,
                "launch": {"preset": "tiny", "seeds": ["x"], "people": 8},
                "probes": {str(tmp_path.resolve()): "run-a"},
            }
        )
    )
    told = []
    remembered = Remembered(path)
    remembered.tell(told.append)
    assert remembered.text("theme") is None and remembered.launch() == {"preset": "tiny", "seeds": ["x"]}
    assert remembered.probe_runs(tmp_path) == [] and told == []

    blocked = Remembered(tmp_path / "a-file" / "tui.json")
    (tmp_path / "a-file").write_text("not a folder")
    blocked.tell(told.append)
    blocked.set_theme("nord")  # no exception: one line for the user
    assert len(told) == 1 and "cannot remember settings" in told[0] and "works on without" in told[0]


def test_the_launch_form_starts_from_the_values_last_launched_but_never_the_name(tmp_path):
    remembered = Remembered(tmp_path / "tui.json")
    remembered.set_launch(
        {
            "preset": "tiny",
            "strategies": ["mix", "qa"],
            "seeds": "3 4",
            "people": "8",
            "model": "",
            "device": "cpu",
            "executor": "no-such",
            "settings": "train.mix.epochs=2",
        }
    )

    async def script(app, pilot):
        app.push_screen(LaunchScreen(app.workspace, remembered))
        await settle(pilot, until=lambda: isinstance(app.screen, LaunchScreen), what="the form")
        await settle(pilot)
        form = app.screen
        values = form.values()
        assert values == {
            "preset": "tiny",
            "strategies": ["mix", "qa"],
            "seeds": "3 4",
            "people": "8",
            "model": "",
            "device": "cpu",
            "executor": "local",  # an executor no longer offered: the default
            "settings": "train.mix.epochs=2",
        }
        assert form.query_one("#name", Input).value == ""
        assert [name for _, name in form.planned] == [
            "tiny-mix+qa-s3-" + form.planned[0][1].rsplit("-", 1)[1],
            "tiny-mix+qa-s4-" + form.planned[1][1].rsplit("-", 1)[1],
        ]

    drive(fixed_workspace(tmp_path / "ws"), (120, 36), script)
