"""The Compare screen (`m` on Jobs): `factrecall-jobs compare` for the runs the Jobs table shows (filter
them with `/` first): one row per configuration and trained model, seeds folded into mean ± std, and
the settings that differ between the configurations as columns. The table is
`jobs.run.tables.comparison`'s, the CLI's own, computed in a thread (it reads every run's spec and
metrics). `e` exports it as CSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Static

from factrecall_tui.escape import escaped
from factrecall_tui.messages import Export
from factrecall_tui.pane import HandsFailuresUp
from factrecall_tui.quiet import DataTable, Footer, Line
from factrecall_tui.run_view import to_csv
from jobs.errors import USER_ERRORS, first_line
from jobs.run.tables import comparison
from jobs.shown import visible


class CompareScreen(HandsFailuresUp, Screen):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("e", "export", "Export")]
    HELP = (
        "Compare",
        "The runs the Jobs table shows, as `factrecall-jobs compare`: a row per configuration "
        "and model (seeds folded into mean ± population std), the settings that differ as columns.",
    )

    @dataclass
    class Compared(Message, bubble=False):
        header: list[str]
        rows: list[list[str]]
        error: str = ""

    def __init__(self, paths: list[Path], what: str):
        super().__init__()
        self.paths, self.what = paths, what
        self.header: list[str] = []
        self.rows: list[list[str]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Line(
            f"[b]Compare[/] · {escaped(self.what)} · exact match (%) · [dim]reading {len(self.paths)} runs…[/]",
            id="compare-title",
        )
        yield DataTable(id="compare-table", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self._compare()

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _compare(self) -> None:
        try:
            header, rows = comparison(self.paths)
        except (OSError, *USER_ERRORS) as err:  # a run changed or broke since the scan
            self.post_message(self.Compared([], [], error=first_line(err)))
            return
        self.post_message(self.Compared(header, rows))

    @on(Compared)
    def _show(self, message: Compared) -> None:
        title = self.query_one("#compare-title", Static)
        # The runs' words (a setting's value, an error quoting a spec) are text: never markup, and
        # their control characters written out.
        if message.error:
            title.update(f"[b]Compare[/] · {escaped(self.what)} · [red]{escaped(message.error)}[/]")
            return
        self.header, self.rows = message.header, message.rows
        table = self.query_one(DataTable)
        table.clear(columns=True)
        for name in message.header:
            table.add_column(Text(visible(name)), key=name)
        table.add_rows([[Text(visible(cell)) for cell in row] for row in message.rows])
        configs = len({row[0] for row in message.rows})
        differing = message.header[1 : message.header.index("Model")]
        title.update(
            f"[b]Compare[/] · {escaped(self.what)} · {configs} configuration{'s' * (configs != 1)} · exact "
            f"match (%) · differing: {escaped(', '.join(differing)) or 'nothing but the seed'}"
        )
        table.focus()

    def action_export(self) -> None:
        if not self.header:
            self.notify("nothing to export yet", severity="warning")
            return
        self.post_message(Export("compare", to_csv(self.header, self.rows)))
