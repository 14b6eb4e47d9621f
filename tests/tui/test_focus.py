"""The focus is always on something the user can see. A hidden widget that holds the focus swallows
every key typed (the Jobs filter field after a tab switch, the log's search field when the log
opened, both found by hand): on every tab and every screen the app opens, the focused widget must be
one the screen's focus chain offers (displayed, in the shown tab)."""

from __future__ import annotations

from factrecall_tui.compare_view import CompareScreen
from factrecall_tui.help import HelpScreen
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.launch import LaunchScreen
from factrecall_tui.log_view import LogScreen
from tests.tui.helpers import settle
from tests.tui.test_review import drive
from tests.tui.workspace import fixed_workspace


def _visible(app) -> bool:
    return app.focused is None or app.focused in app.screen.focus_chain


def test_the_focus_never_rests_on_a_hidden_widget(tmp_path):
    async def script(app, pilot):
        seen = []
        for tab in "2345123":
            await pilot.press(tab)
            await settle(pilot)
            seen.append((f"tab {tab}", app.focused, _visible(app)))
        app.query_one(JobsPane).focus_run("cpu-stage+mix-s0")
        for opener, screen, closer in (
            ("n", LaunchScreen, "escape"),
            ("question_mark", HelpScreen, "escape"),
            ("m", CompareScreen, "escape"),
            ("l", LogScreen, "escape"),
        ):
            await pilot.press("1", opener)
            await settle(pilot, until=lambda screen=screen: isinstance(app.screen, screen), what=screen.__name__)
            await pilot.pause(0.2)
            seen.append((screen.__name__, app.focused, _visible(app)))
            await pilot.press(closer)
            await settle(pilot, until=lambda screen=screen: not isinstance(app.screen, screen), what="back")
        return seen

    seen = drive(fixed_workspace(tmp_path / "ws"), (120, 36), script)
    assert all(ok for _, _, ok in seen), [s for s in seen if not s[2]]
