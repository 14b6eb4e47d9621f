"""What the app redraws, and what it does not: each widget of factrecall_tui/quiet.py against the
redraw it saves, and that it still redraws everything that did change (text, keys, rows, a theme).
The app's idle terminal staying silent is tests/tui/test_terminal.py's; the time each key takes is
benchmarks/bench_tui.py's."""

from __future__ import annotations

import asyncio

from textual.app import App
from textual.binding import Binding
from textual.widgets import Input

from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.quiet import DataTable, Footer, Line
from tests.tui.helpers import settle
from tests.tui.test_review import drive
from tests.tui.test_run_list import shown
from tests.tui.workspace import fixed_workspace


class Keys(App):
    """Two text fields binding different keys, and the footer."""

    BINDINGS = [Binding("f9", "pressed('nine')", "Nine")]

    class Left(Input):
        BINDINGS = [Binding("f2", "app.pressed('left')", "Left thing")]

    class Right(Input):
        BINDINGS = [Binding("f3", "app.pressed('right')", "Right thing"), Binding("f4", "off", "Off thing")]

        def check_action(self, action: str, parameters: tuple) -> bool | None:
            return None if action == "off" else True  # None: shown, disabled

        def action_off(self) -> None:
            self.app.pressed.append("off")

    def __init__(self):
        super().__init__()
        self.pressed: list[str] = []

    def compose(self):
        yield self.Left(id="left")
        yield self.Left(id="left2")
        yield self.Right(id="right")
        yield Line("one", id="line")
        yield Footer()

    def action_pressed(self, what: str) -> None:
        self.pressed.append(what)


def _footer_text(app) -> str:
    return app.query_one(Footer).render().plain


def test_the_footer_follows_the_focus_and_a_click_presses_a_key():
    async def session():
        app = Keys()
        async with app.run_test(size=(100, 10)) as pilot:
            app.query_one("#left").focus()
            await settle(pilot)
            text = _footer_text(app)
            assert "f2 Left thing" in text and "Right thing" not in text and "f9 Nine" in text
            assert text.rstrip().endswith("^p palette")  # the palette's key at the right edge
            app.query_one("#right").focus()
            await settle(pilot)
            text = _footer_text(app)
            assert "f3 Right thing" in text and "f4 Off thing" in text and "Left thing" not in text
            # A disabled key is drawn dim, an enabled one not.
            spans = app.query_one(Footer).render()
            dim = {spans.plain[s.start : s.end].strip() for s in spans.spans if s.style.dim}
            assert "f4" in dim and "f3" not in dim
            # A click on a key presses it.
            x = text.index("f3")
            await pilot.click(Footer, offset=(x + 1, 0))
            await settle(pilot)
            assert app.pressed == ["right"]

    asyncio.run(session())


def test_the_footer_and_a_line_redraw_only_when_what_they_show_changes():
    async def session():
        app = Keys()
        async with app.run_test(size=(100, 10)) as pilot:
            app.query_one("#left").focus()
            await settle(pilot)
            footer, line = app.query_one(Footer), app.query_one(Line)
            refreshed: list[str] = []
            for widget in (footer, line):
                real = widget.refresh
                widget.refresh = lambda *a, _w=widget, _real=real, **k: (
                    refreshed.append(_w.id or "footer"),
                    _real(*a, **k),
                )[1]
            app.query_one("#right").focus()  # other keys
            await settle(pilot)
            assert refreshed.count("footer") >= 1
            app.query_one("#left").focus()
            await settle(pilot)
            refreshed.clear()
            app.query_one("#left2").focus()  # another field with the same keys: nothing to draw
            line.update("one")  # the same text
            await settle(pilot)
            assert refreshed == []
            line.update("two")
            await settle(pilot)
            assert refreshed == ["line"] and str(line.render()) == "two"

    asyncio.run(session())


def test_a_table_shown_again_keeps_its_rendered_cells_and_a_theme_change_redraws_them(tmp_path):
    """Tabs 2 and 1: the Jobs table comes back with every cell it had rendered (Textual's DataTable
    forgets them on the Resize and the style pass a shown tab gets). A new theme: every cell is drawn
    again in its colours (a cache kept across a real style change would draw the old ones)."""
    ws = fixed_workspace(tmp_path / "ws")

    async def script(app, pilot):
        table = app.query_one("#jobs-table", DataTable)
        await settle(pilot)
        cached, count = list(table._cell_render_cache.keys()), table._update_count
        assert cached
        await pilot.press("2", "3", "1")
        await settle(pilot)
        assert table._update_count == count and all(key in table._cell_render_cache for key in cached)

        def background() -> set:
            return {segment.style.bgcolor for segment in table.render_line(3) if segment.style is not None}

        before = background()
        app.theme = "textual-light" if app.theme != "textual-light" else "nord"
        await settle(pilot)
        assert background() != before

    drive(ws, (110, 32), script)


def test_typing_a_filter_keeps_the_chosen_run_and_backspace_brings_the_rows_back(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")

    async def script(app, pilot):
        everything = shown(app)
        app.query_one(JobsPane).focus_run("cpu-stage+mix-s1")
        await pilot.press("slash", *"cpu")  # narrows: the rows above the chosen one go
        await settle(pilot, until=lambda: len(shown(app)) == 3, what="the filtered rows")
        assert shown(app) == ["cpu-stage+mix-s0", "cpu-stage+mix-s1", "cpu-stage+mix-s2"]
        assert app.query_one(JobsPane).selected.name == "cpu-stage+mix-s1"
        await pilot.press("backspace", "backspace", "backspace")  # widens: every row back, in order
        await settle(pilot, until=lambda: len(shown(app)) == len(everything), what="every row")
        assert shown(app) == everything
        assert app.query_one(JobsPane).selected.name == "cpu-stage+mix-s1"

    drive(ws, (110, 32), script)


def test_the_app_collects_less_and_freezes_once_shown(tmp_path, monkeypatch):
    """factrecall-tui's own process: gc.freeze() once, after the first scan is shown."""
    import factrecall_tui.app as app_module

    frozen: list[int] = []
    monkeypatch.setattr(app_module.gc, "freeze", lambda: frozen.append(1))
    ws = fixed_workspace(tmp_path / "ws")

    async def session():
        app = FactrecallApp(ws, scan_every=0, freeze_gc=True)
        async with app.run_test(size=(110, 32)) as pilot:
            await settle(pilot, until=lambda: app.query_one(JobsPane).runs, what="the first scan")
            app.rescan()
            await settle(pilot)
            assert frozen == [1]

    asyncio.run(session())


def test_the_store_pane_still_sees_a_probe_cache_written_while_no_run_changed(tmp_path):
    """The rescans that find every run unchanged skip Jobs, Accuracy and Probes, not Store: a probe
    cache written from a shell (`factrecall-jobs probe`) changes no file of the run's own."""
    import shutil

    import zarr

    from factrecall_tui.runs import scan
    from factrecall_tui.store_view import StorePane

    ws = fixed_workspace(tmp_path / "ws")
    for run in scan(ws):  # a queued or running run is read again every scan: none here
        if run.status in ("queued", "running"):
            shutil.rmtree(run.path)
    store = ws / "runs" / "cpu-stage+mix-s0" / "activations.zarr"

    async def session():
        app = FactrecallApp(ws, scan_every=0.2)
        async with app.run_test(size=(110, 32)) as pilot:
            await settle(pilot, until=lambda: app.query_one(JobsPane).runs, what="the first scan")
            app.open_run("store", "cpu-stage+mix-s0")
            pane = app.query_one(StorePane)
            await settle(pilot, until=lambda: pane.nodes, what="the store's tree")
            runs = app.runs
            zarr.open_group(
                str(store), mode="a", path="probes/0123456789abcdef0123", zarr_format=3, use_consolidated=False
            ).attrs.put({"model": "mix", "settings": {}})
            await settle(
                pilot, until=lambda: "probes/0123456789abcdef0123" in pane.nodes, what="the new probe cache in the tree"
            )
            assert all(a is b for a, b in zip(app.runs, runs))  # found while no run changed

    asyncio.run(session())
