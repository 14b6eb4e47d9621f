"""The Accuracy pane: the paper's Figure 1 and Figure 5 across a workspace's runs, and a bar chart.

- Figure 1: QA out-of-distribution exact match per attribute and their average;
- Figure 5: BIO, QA in-distribution and QA out-of-distribution averages.

Runs of one configuration (same spec but the seed) are one group, shown as mean ± std over seeds:
the cells are `jobs.run.tables.cell` of `jobs.run.tables.load_groups`, the strings `factrecall-jobs show`
prints. One row per (group, model present); only runs with at least one trained model appear. The
chart below the table shows the group under the cursor: grouped bars, one colour per trained model
(Stage and Mix side by side), per attribute (Figure 1) or per evaluation set (Figure 5).

The tables themselves are built without Textual, beside this module: factrecall_tui/accuracy_tables.py.

Keys: ↑/↓ choose a row, f switch between Figure 1 and Figure 5 (the table in a short terminal, and
the chart).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from factrecall_tui.accuracy_tables import (
    FIG1_COLUMNS,
    FIG1_LABELS,
    FIG5_LABELS,
    FIGURES,
    TRAINED,
    Curve,
    GroupRows,
    Row,
    Tables,
    build_tables,
    runs_signature,
    seeds_said,
    table_rows,
)
from factrecall_tui.escape import escaped
from factrecall_tui.messages import Export
from factrecall_tui.pane import HandsFailuresUp, when_mounted
from factrecall_tui.quiet import DataTable, Line
from factrecall_tui.run_view import to_csv
from factrecall_tui.runs import RunSummary
from jobs.shown import visible
from jobs.words import MODEL_LABELS, SET_LABELS

FILL_CHUNK = 100  # rows added to the tables at a time (see `_fill`)
FILL_PAUSE_S = 0.005
TALL = 40  # pane height from which both tables are shown at once


class AccuracyPane(HandsFailuresUp, Vertical):
    """Figure 1 and Figure 5 across runs (mean ± std over seeds) and a bar chart of the group under
    the cursor. `show(runs)` after a scan that changed a run; `focus_run(name)` puts the cursor on a run."""

    BINDINGS = [
        Binding("f", "toggle_figure", "Fig. 1 ⇄ Fig. 5"),
        Binding("t", "toggle_curves", "Curves ⇄ bars"),
        Binding("e", "export", "Export", show=False),
    ]

    @dataclass
    class Loaded(Message, bubble=False):
        """The worker's tables for the scan numbered `generation` (a later scan's make these stale)."""

        generation: int
        tables: Tables

    def __init__(self, *, id: str | None = None, classes: str | None = None):  # noqa: A002 - Textual's name
        super().__init__(id=id, classes=classes)
        self.figure = "fig1"  # which figure the chart (and a short pane's table) shows
        self.groups: list[GroupRows] = []
        self.notes: list[str] = []
        self.chart_data: dict[str, list[float]] = {}  # model label -> bar heights, exactly as plotted
        self.chart_labels: list[str] = []  # the bars' x labels
        self.chart_title = ""
        self.chart = "bars"  # or "curves": the group's accuracy over training (t)
        self.chart_curves: dict[str, Curve] = {}  # what the curves chart plots, by model label
        self.loaded = False  # the first result is in
        self._signature: tuple | None = None
        self._generation = 0
        self._row_group: dict[str, int] = {}  # row key -> index in self.groups
        self._keys: dict[tuple[int, str], str] = {}  # (index in self.groups, model) -> row key
        self._pending_focus: str | None = None
        self._cursor_wanted: str | None = None  # a row the cursor goes to once the fill has added it
        self.message = ""  # the line above the tables (rich markup)

    def compose(self) -> ComposeResult:
        yield Line("Reading the runs' results…", id="acc-message")
        yield Static(FIGURES["fig1"], id="acc-caption-fig1", classes="acc-caption")
        yield DataTable(id="acc-fig1", cursor_type="row", zebra_stripes=True)
        yield Static(FIGURES["fig5"], id="acc-caption-fig5", classes="acc-caption")
        yield DataTable(id="acc-fig5", cursor_type="row", zebra_stripes=True)
        yield Line("", id="acc-legend")
        yield PlotextPlot(id="acc-chart")

    def on_mount(self) -> None:
        fig1, fig5 = self.query_one("#acc-fig1", DataTable), self.query_one("#acc-fig5", DataTable)
        fig1.add_column("Run", key="run")
        fig1.add_column("Model", key="model")
        for key, label in zip(FIG1_COLUMNS, FIG1_LABELS):
            fig1.add_column(label, key=key)
        fig1.add_column("Seeds", key="seeds")
        fig5.add_column("Run", key="run")
        fig5.add_column("Model", key="model")
        for key, label in SET_LABELS.items():
            fig5.add_column(label, key=key)
        fig5.add_column("Seeds", key="seeds")
        self.set_class(True, "-fig1")
        self._draw_chart()

    # -- the contract with the app -------------------------------------------------------------
    @when_mounted
    def show(self, runs: list[RunSummary]) -> None:
        """Every scan: re-read the results of runs with a trained model, in a worker; nothing is
        touched (cursor included) when they did not change."""
        shown = [r for r in runs if isinstance(r.metrics, dict) and any(m in r.metrics for m in TRAINED)]
        signature = runs_signature(shown)
        if signature == self._signature:
            return
        self._signature = signature
        self._generation += 1
        self._load([r.path for r in shown], self._generation)

    @when_mounted
    def focus_run(self, name: str) -> None:
        """Put the cursor on the first trained model of the group holding run `name`."""
        if not self.loaded:
            self._pending_focus = name
            return
        for i, g in enumerate(self.groups):
            if name in g.runs or (not g.runs and name == g.label):
                model = next((m for m in g.models if m in TRAINED), g.models[0])
                self._move_cursor(self._keys[i, model])
                return
        self._set_message(f"{escaped(name)}: no trained model's results to show yet")

    # -- loading -------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="accuracy-load", exit_on_error=False)
    def _load(self, paths: list[Path], generation: int) -> None:
        tables = build_tables(paths)
        if not get_current_worker().is_cancelled:
            self.post_message(self.Loaded(generation, tables))

    @on(Loaded)
    def _apply(self, message: Loaded) -> None:
        if message.generation != self._generation:
            return  # a newer scan's result is on its way
        tables = message.tables
        self.loaded = True
        keep = self._cursor_key()
        old_rows = table_rows(self.groups)
        self.groups, self.notes = tables.groups, tables.notes
        new_rows = table_rows(self.groups)
        self._row_group = {row.key: row.group for row in new_rows}
        self._keys = {(row.group, row.model): row.key for row in new_rows}
        if new_rows != old_rows:
            self._fill(new_rows, keep)
        self._set_message("")
        if self._pending_focus is not None:
            name, self._pending_focus = self._pending_focus, None
            self.focus_run(name)
        self._draw_chart()

    def _fill(self, rows: list[Row], keep: str | None) -> None:
        """Both tables anew; the cursor stays on the row it was on (same run label and model), once
        `_add_rows` has added it."""
        for figure in FIGURES:
            self._table(figure).clear()
        self._cursor_wanted = keep
        self._add_rows(rows)

    @work(exclusive=True, group="accuracy-fill")
    async def _add_rows(self, rows: list[Row]) -> None:
        """FILL_CHUNK rows at a time: a DataTable measures every cell of the rows added to it before
        it draws, and 300 runs make 1,500 rows, so the first screenful is drawn, and keys are
        answered, while the rest are added. A pane unmounted between chunks (the app closing while a
        large workspace fills) stops filling: its tables are gone, and that is not an error."""
        try:
            await self._add_chunks(rows)
        except NoMatches:  # the tables this pane composed are gone: it is being removed
            return

    async def _add_chunks(self, rows: list[Row]) -> None:
        fig1, fig5 = self._table("fig1"), self._table("fig5")
        for start in range(0, len(rows), FILL_CHUNK):
            chunk = rows[start : start + FILL_CHUNK]
            for row in chunk:
                # Text, not str: a str cell is parsed as markup, a third of the cost of a row.
                label, seeds_cell = Text(MODEL_LABELS[row.model]), Text(row.seeds)
                run_cell = Text(visible(row.run))  # a run folder's name: text, its control characters written out
                fig1.add_row(run_cell, label, *map(Text, row.fig1), seeds_cell, key=row.key)
                fig5.add_row(run_cell, label, *map(Text, row.fig5), seeds_cell, key=row.key)
            wanted = self._cursor_wanted
            if wanted is not None and any(row.key == wanted for row in chunk):
                self._cursor_wanted = None
                self._move_cursor(wanted)
            await asyncio.sleep(FILL_PAUSE_S)  # a frame, and any key waiting, before the next rows

    # -- cursor and chart ----------------------------------------------------------------------
    def _table(self, figure: str | None = None) -> DataTable:
        return self.query_one(f"#acc-{figure or self.figure}", DataTable)

    def _cursor_key(self) -> str | None:
        table = self._table()
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except CellDoesNotExist:  # no cursor row
            return None

    def _move_cursor(self, key: str) -> None:
        if key not in self._table().rows:  # not added yet: the fill puts the cursor there when it is
            self._cursor_wanted = key
            return
        for figure in FIGURES:
            table = self._table(figure)
            try:
                row = table.get_row_index(key)
            except RowDoesNotExist:  # not in this table
                continue
            if table.cursor_row != row:
                table.move_cursor(row=row)
        self._draw_chart()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.cursor_row != event.data_table.cursor_row:
            return  # stale: the cursor moved on since (following it would pull the other table back)
        key = event.row_key.value
        other = self._table("fig5" if event.data_table.id == "acc-fig1" else "fig1")
        if other.row_count == event.data_table.row_count and other.cursor_row != event.cursor_row:
            other.move_cursor(row=event.cursor_row)
        if key is not None:
            self._draw_chart(key)

    def action_export(self) -> None:
        """The figure's table as shown, as CSV (a file in WORKSPACE/exports and the clipboard)."""
        table = self._table()
        header = [str(column.label) for column in table.columns.values()]
        self.post_message(
            Export(f"accuracy-{self.figure}", to_csv(header, (table.get_row_at(i) for i in range(table.row_count))))
        )

    def action_toggle_figure(self) -> None:
        hidden = self._table()
        self.figure = "fig5" if self.figure == "fig1" else "fig1"
        self.set_class(self.figure == "fig1", "-fig1")
        self.set_class(self.figure == "fig5", "-fig5")
        if hidden.has_focus and not self.has_class("-tall"):
            self._table().focus()
        self._draw_chart()

    def action_toggle_curves(self) -> None:
        """t: the chart shows the group's exact match over training (one panel per set) or its bars."""
        self.chart = "curves" if self.chart == "bars" else "bars"
        self._draw_chart()

    def on_resize(self) -> None:
        self.set_class(self.size.height >= TALL, "-tall")

    def _draw_chart(self, key: str | None = None) -> None:
        key = key or self._cursor_key()
        plot = self.query_one("#acc-chart", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        group = self.groups[self._row_group[key]] if key in self._row_group else None
        legend = self.query_one("#acc-legend", Static)
        self.chart_curves = {}
        if self.chart == "curves" and group is not None and group.curves:
            self._draw_curves(plt, group, legend)
        elif self.chart == "curves" and group is not None:
            self.chart_data, self.chart_labels = {}, []
            self.chart_title = f"{group.label}: no training curve logged (train.eval_every is 0?); t shows the bars"
            legend.update(f"[dim]{escaped(self.chart_title)}[/]")
        elif group is None or not group.chart1:
            self.chart_data, self.chart_labels = {}, []
            self.chart_title = "no trained model to plot" if group is not None else "no runs with a trained model yet"
            legend.update(f"[dim]{escaped(self.chart_title)}[/]")
        else:
            data = group.chart1 if self.figure == "fig1" else group.chart5
            self.chart_labels = FIG1_LABELS if self.figure == "fig1" else FIG5_LABELS
            self.chart_data = {model: list(values) for model, values in data.items()}
            seeds = seeds_said(group)
            what = "QA out exact match per attribute" if self.figure == "fig1" else "exact match per set"
            self.chart_title = (
                f"{'Figure 1' if self.figure == 'fig1' else 'Figure 5'} · {group.label}{seeds} · {what} (%)"
            )
            keys = "  ".join(
                f"[rgb({r},{g},{b})]██[/] {escaped(model)}" for model, (r, g, b) in zip(self.chart_data, group.colors)
            )
            legend.update(f"[b]{escaped(self.chart_title)}[/]\n{keys}")
            plt.multiple_bar(self.chart_labels, list(self.chart_data.values()), color=group.colors, width=0.8)
            plt.ylim(0, 100)
            plt.yticks([0, 25, 50, 75, 100])
        plot.refresh()

    def _draw_curves(self, plt, group: GroupRows, legend: Static) -> None:
        """Three panels (BIO, QA in, QA out), a line per trained model: the mean over its seeds; a
        dotted line where Stage's QA phase starts. The same numbers as `factrecall-jobs plot`'s PNG."""
        self.chart_data, self.chart_labels = {}, []
        self.chart_curves = dict(group.curves)
        seeds = max(c.seeds for c in group.curves.values())
        self.chart_title = (
            f"Over training · {group.label}"
            + (f" · mean of {seeds} seeds" if seeds > 1 else "")
            + " · exact match (%) by optimizer step"
        )
        keys = "  ".join(
            f"[rgb({r},{g},{b})]██[/] {escaped(label)}" + (" (QA phase after ┆)" if c.switch else "")
            for label, c in group.curves.items()
            for r, g, b in [c.color]
        )
        legend.update(f"[b]{escaped(self.chart_title)}[/]\n{keys}")
        plt.subplots(1, len(SET_LABELS))
        for i, (key, name) in enumerate(SET_LABELS.items(), start=1):
            panel = plt.subplot(1, i)
            panel.title(name)
            for curve in group.curves.values():
                panel.plot(curve.steps, curve.means[key], color=curve.color, marker="braille")
                if curve.switch:
                    panel.vertical_line(curve.switch, color=curve.color)
            panel.ylim(0, 100)
            panel.yticks([0, 50, 100])

    def _set_message(self, text: str) -> None:
        """The line above the tables: what is shown, or `text`; and the first run that could not be."""
        if not text:
            runs = sum(len(g.seeds) for g in self.groups)
            if not self.groups:
                text = (
                    "No run has a trained model's results yet: runs appear here once "
                    "`factrecall-jobs run` has evaluated Stage, Mix, BIO or QA."
                )
            else:
                text = (
                    f"{len(self.groups)} configuration{'s' * (len(self.groups) != 1)} · {runs} "
                    f"run{'s' * (runs != 1)} · over seeds: mean ± population std (as `show`) · "
                    "f: Figure 1 ⇄ 5 · t: curves"
                )
        if self.notes:
            more = f" (+{len(self.notes) - 1} more)" if len(self.notes) > 1 else ""
            text += f"\n[b red]skipped[/] {escaped(self.notes[0])}{more}"
        self.message = text
        self.query_one("#acc-message", Static).update(text)
