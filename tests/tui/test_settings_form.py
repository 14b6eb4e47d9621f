"""The app's settings form (factrecall_tui/settings_form.py) is built from a settings dataclass's
declaration (store/settings.py): a field added there is a row of the Probes pane with no other edit,
each row's widget follows its type, and an invalid value is one line and no settings."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
from textual.app import App
from textual.widgets import Checkbox, Input, Select

import factrecall_tui.probes as probes_module
from factrecall_tui.probe_fit import ProbeRequest
from factrecall_tui.probe_state import FitState, Phase, Threads
from factrecall_tui.probes import ProbesPane
from factrecall_tui.settings_form import SettingsForm, parse, shown, shown_fields
from store.settings import ProbeSettings, problem, resolved, setting
from tests.tui.helpers import settle


@dataclass(frozen=True)
class Deeper(ProbeSettings):
    """ProbeSettings with one field more, as a later change might declare it."""

    depth: int = setting(3, "how deep the throwaway probe goes", low=1, high=8)
    mode: Literal["fast", "slow"] = setting("fast", "a throwaway choice")


class Host(App):
    def __init__(self, form: SettingsForm) -> None:
        super().__init__()
        self.form = form

    def compose(self):
        yield self.form


def _run(form: SettingsForm, script) -> None:
    async def session():
        app = Host(form)
        async with app.run_test(size=(60, 24)) as pilot:
            await settle(pilot)
            await script(pilot)

    asyncio.run(session())


def test_a_field_added_to_the_settings_is_a_row_of_the_probes_form_with_no_other_edit(monkeypatch):
    monkeypatch.setattr(probes_module, "ProbeSettings", Deeper)

    async def session():
        app = App()
        async with app.run_test(size=(100, 40)) as pilot:
            await app.mount(ProbesPane(id="probes"))
            await settle(pilot)
            pane = app.query_one(ProbesPane)
            assert pane.query_one("#probe-depth", Input).value == "3"
            assert isinstance(pane.query_one("#probe-mode"), Select) and pane.form.values("mode") == ("fast", "slow")
            pane.query_one("#probe-depth", Input).value = "5"
            pane.form.cycle("mode")
            await settle(pilot)
            assert pane.form.value == Deeper(depth=5, mode="slow")
            pane.query_one("#probe-depth", Input).value = "9"
            await settle(pilot)
            assert pane.form.value is None and pane.form.problem.startswith("depth: 9 is out of range: give 1 to 8")

    asyncio.run(session())


def test_each_field_s_widget_follows_its_type_and_the_expert_ones_are_left_out():
    form = SettingsForm(Deeper(), prefix="s-")

    async def script(pilot):
        assert isinstance(form.query_one("#s-bio"), Select)
        assert form.options("bio") == [("long", "bio_long"), ("short", "bio_short")]  # shown without the prefix
        assert isinstance(form.query_one("#s-controls"), Checkbox)
        assert isinstance(form.query_one("#s-l2"), Input) and form.query_one("#s-l2", Input).value == "0.001"
        assert form.query_one("#s-layers", Input).value == ""  # None: every layer
        assert not form.query("#s-max-iter")  # form=False: the CLI's and the config's only
        assert form.value == Deeper()
        form.set("layers", (0, -1))
        form.set("controls", False)
        await settle(pilot)
        assert form.value == Deeper(layers=(0, -1), controls=False)

    _run(form, script)
    assert [f.name for f in shown_fields(Deeper)] == [
        f.name for f in dataclasses.fields(Deeper) if f.name != "max_iter"
    ]


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("l2", "-1", "out of range: give a number above 0"),
        ("l2", "lots", "'lots': give a number"),
        ("layers", "0 two", "'two': give a whole number"),
        ("depth", "2.5", "'2.5': give a whole number"),
        ("depth", "", "must be given"),
    ],
)
def test_an_invalid_value_is_one_line_and_no_settings_until_it_is_fixed(name, text, said):
    form = SettingsForm(Deeper(), prefix="s-")
    field = {f.name: f for f in dataclasses.fields(Deeper)}[name]
    why = f"{name}: {problem(field, resolved(Deeper)[name], parse(field, resolved(Deeper)[name], text))}"

    async def script(pilot):
        widget = form.query_one(f"#s-{name}", Input)
        widget.value = text
        await settle(pilot)
        assert form.value is None and form.problem == why and said in why  # store.settings' words
        line = form.query_one(".settings-problem")
        assert line.display and str(line.render()) == why and "\n" not in why
        assert not widget.is_valid
        widget.value = "4"
        await settle(pilot)
        assert form.problem is None and not line.display
        assert getattr(form.value, name) == ((4,) if name == "layers" else 4)

    _run(form, script)


def test_a_screen_gives_a_field_its_own_choices_and_changes_them():
    form = SettingsForm(ProbeSettings(), choices={"attribute": ("job", "employer")}, prefix="s-")

    async def script(pilot):
        select = form.query_one("#s-attribute", Select)
        assert select.value == "job" and form.values("attribute") == ("job", "employer")
        form.cycle("attribute")
        assert form.get("attribute") == "employer"
        form.set_choices("attribute", ("birth_date", "employer"))  # kept where it still is one
        assert form.get("attribute") == "employer"
        form.set_choices("attribute", ("birth_date", "job"))  # else the form's own value
        assert form.get("attribute") == "job"
        form.set_choices("attribute", ("birth_date", "city"))  # else the first
        assert form.get("attribute") == "birth_date"
        await settle(pilot)
        assert form.value == ProbeSettings(attribute="birth_date")

    _run(form, script)


def test_a_text_field_given_choices_is_a_select_whose_choices_change_at_run_time():
    """`site` is a plain str field: an Input where the screen gives no choices, a Select of the
    screen's (the Probes pane: the sites the chosen stores hold) where it does, never typed."""
    typed = SettingsForm(ProbeSettings(), prefix="t-")
    form = SettingsForm(ProbeSettings(), choices={"site": ("mlp_out@subject_last", "resid_mid@last")}, prefix="s-")

    async def script(pilot):
        assert isinstance(typed.query_one("#t-site"), Input) and typed.value == ProbeSettings()
        select = form.query_one("#s-site", Select)
        assert select.value == "resid_mid@last"  # the form's own value, where it is one of the choices
        assert form.options("site") == [("mlp_out@subject_last", "mlp_out@subject_last"), ("resid_mid@last",) * 2]
        form.set_choices("site", ("attn_out@last", "mlp_out@subject_last"))  # else the first
        assert form.get("site") == "attn_out@last"
        form.cycle("site")
        await settle(pilot)
        assert form.value == ProbeSettings(site="mlp_out@subject_last")

    async def session():
        app = Host(form)
        async with app.run_test(size=(60, 24)) as pilot:
            await app.mount(typed)
            await settle(pilot)
            await script(pilot)

    asyncio.run(session())


def test_text_is_parsed_for_the_field_and_written_back_the_same():
    fields = {f.name: f for f in dataclasses.fields(Deeper)}
    hints = resolved(Deeper)
    assert parse(fields["layers"], hints["layers"], " 0, 2 -1 ") == (0, 2, -1)
    assert parse(fields["layers"], hints["layers"], "") is None
    assert parse(fields["l2"], hints["l2"], "1e-2") == 0.01
    assert parse(fields["l2"], hints["l2"], "2") == 2.0 and isinstance(parse(fields["l2"], hints["l2"], "2"), float)
    assert parse(fields["depth"], hints["depth"], "x") == "x"  # for `problem` to say why
    assert parse(fields["bio"], hints["bio"], "short") == "bio_short"  # as the CLI's --bio short
    assert shown((0, -1)) == "0 -1" and shown(None) == "" and shown(0.001) == "0.001"


def test_the_request_holds_the_whole_settings_and_says_the_ones_changed():
    request = ProbeRequest(("run-a",), ("/w/runs/run-a",), ProbeSettings(attribute="employer", backend="ridge"))
    assert request.describe() == "employer, bio_long, qa_in → qa_out, backend ridge, run-a"
    two = ProbeRequest(("a", "b"), ("/a", "/b"), ProbeSettings(layers=(0, 1), controls=False))
    assert two.describe() == "job, bio_long, qa_in → qa_out, layers 0 1, controls off, 2 runs"
    assert ProbeRequest(("a",), ("/a",)).settings == ProbeSettings()


def test_the_pane_s_state_machine():
    state = FitState()
    request = ProbeRequest(("a",), ("/a",))
    assert state.phase is Phase.IDLE and not state.busy
    first = state.start(request)
    assert state.busy and state.counts(first) and not state.counts(None)
    assert state.stop() and state.phase is Phase.IDLE  # cancelled with nothing shown
    assert not state.counts(first) and not state.stop()  # its later messages change nothing
    second = state.start(request)
    assert second == first + 1
    state.stop()
    state.show(request)
    assert state.phase is Phase.SHOWING and state.shown is request
    state.start(request)
    state.show(request)  # the cache answered while a fit runs: it still runs
    assert state.phase is Phase.FITTING
    state.stop()
    assert state.phase is Phase.SHOWING  # a fit cancelled over a result: the result stays
    threads = Threads()
    with threads.running():
        with threads.running():
            assert not threads.idle.is_set()
        assert not threads.idle.is_set()
    assert threads.idle.is_set()


def test_an_invalid_setting_is_said_when_f_is_pressed_and_nothing_is_fitted(tmp_path, monkeypatch):
    from factrecall_tui.runs import scan
    from tests.tui.workspace import fixed_workspace

    ws = fixed_workspace(tmp_path / "ws")
    monkeypatch.setattr(probes_module, "compute", lambda *a, **k: pytest.fail("fitted with an invalid setting"))

    async def session():
        app = App()
        async with app.run_test(size=(100, 30)) as pilot:
            pane = ProbesPane(id="probes")
            await app.mount(pane)
            pane.show(scan(ws))
            await settle(pilot)
            pane.query_one("#probe-l2", Input).value = "0"
            await settle(pilot)
            pane.action_fit()
            await settle(pilot)
            assert not pane.busy and pane.state is Phase.IDLE
            assert pane.form.problem and pane.form.problem.startswith("l2: 0")
            assert str(pane.query_one("#probe-status").render()) == pane.form.problem

    asyncio.run(session())
