"""The Jobs screen: every run in the workspace with its status and live progress; launch, cancel,
resume, archive or delete, and open a run's log, accuracies, probes or store (asked of the app with the
messages of factrecall_tui/messages.py: the app decides where to go and when to scan again). `/`
filters the runs and `o` (or a click on a header) sorts them (factrecall_tui/run_view.py); `e` exports
the table as shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Static

from factrecall_tui.confirm import Confirm
from factrecall_tui.escape import escaped
from factrecall_tui.messages import Compare, Export, OpenLog, OpenRun, Rescan, RunTab
from factrecall_tui.pane import HandsFailuresUp, when_mounted
from factrecall_tui.quiet import DataTable, Line
from factrecall_tui.report_view import find_studies
from factrecall_tui.run_view import SORTS, FilterError, to_csv, visible
from factrecall_tui.runs import RunSummary, progress_text
from jobs.errors import USER_ERRORS, first_line
from jobs.launch.queue import cancel, remove_run, submit
from jobs.run.workspace import ARCHIVE, RUNS
from jobs.words import RunStatus

STATUS_STYLE: dict[RunStatus, str] = {
    "done": "green",
    "running": "yellow",
    "queued": "cyan",
    "failed": "red",
    "interrupted": "magenta",
    "stopped": "magenta",
    "new": "dim",
    "broken": "red",
}
# Status and progress right after the name: what a narrow terminal must still show.
COLUMNS = {
    "run": "Run",
    "status": "Status",
    "progress": "Progress",
    "strategy": "Strategy",
    "model": "Model",
    "seed": "Seed",
    "people": "People",
}


def _cells(run: RunSummary, stopping: bool = False) -> tuple:
    if run.status == "running" and stopping:
        status = "stopping…"  # asked to stop: it saves its checkpoint, then ends as interrupted
    else:
        status = run.status + (" (starting)" if run.status == "running" and not run.progress else "")
    # Text, not str: a str cell is parsed as markup each time the table measures or draws it (and the
    # spec's words are the file's: RunSummary makes them visible text, never markup).
    return (
        Text(run.name),
        Text(status, style=STATUS_STYLE[run.status]),
        Text.from_markup(progress_text(run)),
        Text(run.strategies),
        Text(run.model),
        Text(run.seed),
        Text(run.people),
    )


class JobsPane(HandsFailuresUp, Vertical):
    BINDINGS = [
        Binding("c", "cancel", "Cancel"),
        Binding("r", "resume", "Resume"),
        Binding("l", "log", "Log"),
        Binding("a", "open('accuracy')", "Accuracy"),
        Binding("p", "open('probes')", "Probes"),
        Binding("s", "open('store')", "Store"),
        Binding("slash", "filter", "Filter"),
        Binding("o", "sort", "Sort", show=False),
        Binding("m", "compare", "Compare"),
        Binding("e", "export", "Export", show=False),
        Binding("x", "remove(False)", "Archive", show=False),
        Binding("D", "remove(True)", "Delete", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    @dataclass
    class Removed(Message, bubble=False):
        """A run archived or deleted (`said`), or why it could not be (`error`)."""

        said: str = ""
        error: str = ""

    def __init__(self, workspace: Path, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.runs: dict[str, RunSummary] = {}  # every run of the workspace, shown or not
        self.all: list[RunSummary] = []  # the same, in the scan's order (newest first)
        self._rows: dict[str, tuple] = {}  # the rows shown, in order
        self._made: dict[str, tuple] = {}  # each run's cells, with the run and stopping they were made for
        self.stopping: set[str] = set()  # runs asked to stop, until they do
        self.query_text = ""  # the filter (factrecall_tui/run_view.py)
        self.sort, self.reverse = "newest", False

    def compose(self) -> ComposeResult:
        with Horizontal(id="jobs-filter-row"):
            yield Input(
                placeholder="filter: words, or status:failed seed:1 -strategy:qa", id="jobs-filter", compact=True
            )
            yield Line("", id="jobs-shown")
        yield DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        yield Line("", id="job-detail")

    def on_resize(self) -> None:
        """In a short terminal the runs come first: the detail below them takes at most a third of the
        pane, and none at all under 10 lines."""
        detail = self.query_one("#job-detail", Static)
        detail.display = self.size.height >= 10
        detail.styles.max_height = max(2, min(6, self.size.height // 3))

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS.items():
            table.add_column(label, key=key)
        self.query_one("#jobs-filter-row").display = False

    # -- data ------------------------------------------------------------------------------------
    @when_mounted
    def show(self, runs: list[RunSummary]) -> None:
        self.all = runs
        self.runs = {r.name: r for r in runs}
        self.stopping &= {r.name for r in runs if r.status == "running"}  # stopped by now: no longer stopping
        self._made = {name: made for name, made in self._made.items() if name in self.runs}
        self._redraw()

    def _redraw(self) -> None:
        """The rows the filter keeps, in the sort's order; a row whose cells changed is updated in place."""
        table = self.query_one(DataTable)
        shown_line = self.query_one("#jobs-shown", Static)
        try:
            runs = visible(self.all, self.query_text, self.sort, self.reverse)
        except FilterError as err:  # it quotes what was typed: text, not markup
            runs = visible(self.all, "", self.sort, self.reverse)
            shown_line.update(f"[red]{escaped(err)}[/]")
        else:
            by = (
                ""
                if self.sort == "newest" and not self.reverse
                else f" · by {COLUMNS.get(self.sort, self.sort).lower()}{' (reversed)' if self.reverse else ''}"
            )
            shown_line.update(f"{len(runs)} of {len(self.all)} runs{by}")
        if self.query_text or self.sort != "newest" or self.reverse:
            self.query_one("#jobs-filter-row").display = True
        order = [r.name for r in runs]
        kept = set(order)
        gone = [name for name in self._rows if name not in kept]
        if gone and len(gone) <= len(order) and [name for name in self._rows if name in kept] == order:
            # A filter narrowed (a character typed): the rows it hides go, the others stay as they are.
            chosen = self.selected.name if self.selected else None
            for name in gone:
                table.remove_row(name)
            self._rows = {name: self._rows[name] for name in order}
            if chosen in kept:
                table.move_cursor(row=order.index(chosen), animate=False)
        if order != list(self._rows):
            chosen = self.selected.name if self.selected else None
            table.clear()
            self._rows = {}
            for run in runs:
                self._rows[run.name] = self._cells(run)
                table.add_row(*self._rows[run.name], key=run.name)
            if chosen in order:
                table.move_cursor(row=order.index(chosen), animate=False)
        else:
            for run in runs:
                cells = self._cells(run)
                old = self._rows[run.name]
                if cells is old:
                    continue
                for key, new, was in zip(COLUMNS, cells, old):
                    if str(new) != str(was) or (isinstance(new, Text) and new.spans != was.spans):
                        table.update_cell(run.name, key, new, update_width=True)
                self._rows[run.name] = cells
        self._detail()

    def _cells(self, run: RunSummary) -> tuple:
        """The run's cells, made again only when the scan read the run again (an unchanged run is the
        same object from scan to scan) or it was asked to stop: a filter typed redraws every row."""
        stopping = run.name in self.stopping
        made = self._made.get(run.name)
        if made is None or made[0] is not run or made[1] != stopping:
            made = self._made[run.name] = (run, stopping, _cells(run, stopping))
        return made[2]

    @property
    def selected(self) -> RunSummary | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.runs.get(key)

    @when_mounted
    def focus_run(self, name: str) -> None:
        if name in self.runs and name not in self._rows:  # hidden by the filter: shown, and said so
            self.notify(f"filter {self.query_text!r} cleared to show {name}")
            self.action_clear_filter()
        if name in self._rows:
            self.query_one(DataTable).move_cursor(row=list(self._rows).index(name), animate=False)

    # -- filter, sort, export ---------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#jobs-filter-row").display = True
        self.query_one("#jobs-filter", Input).focus()

    @on(Input.Changed, "#jobs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self._redraw()

    @on(Input.Submitted, "#jobs-filter")
    def _filter_done(self) -> None:
        """Enter keeps the filter and goes back to the runs."""
        self.query_one(DataTable).focus()

    def action_clear_filter(self) -> None:
        """Escape: no filter, and back to the runs (the sort stays)."""
        self.query_one("#jobs-filter", Input).value = ""
        self.query_text = ""
        self._redraw()
        if self.sort == "newest" and not self.reverse:
            self.query_one("#jobs-filter-row").display = False
        self.query_one(DataTable).focus()

    def action_sort(self) -> None:
        """The next sort: newest first, then by run, status, strategy, seed, model, people."""
        keys = list(SORTS)
        self.sort, self.reverse = keys[(keys.index(self.sort) + 1) % len(keys)], False
        self._redraw()

    @on(DataTable.HeaderSelected, "#jobs-table")
    def _sort_by_column(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by that column; a second click reverses it."""
        key = str(event.column_key.value)
        if key not in SORTS:
            self.notify(f"the {COLUMNS.get(key, key).lower()} column does not sort", severity="warning")
            return
        self.sort, self.reverse = key, (not self.reverse if key == self.sort else False)
        self._redraw()

    def action_export(self) -> None:
        """The table as shown (filtered and sorted) as CSV: a file in WORKSPACE/exports and the clipboard."""
        self.post_message(Export("jobs", to_csv(list(COLUMNS.values()), self._rows.values())))

    @on(DataTable.RowSelected)
    def _open_log(self) -> None:
        """Enter (or a click on the selected row) opens the run's log."""
        self.action_log()

    @on(DataTable.RowHighlighted)
    def _detail(self) -> None:
        detail = self.query_one("#job-detail", Static)
        run = self.selected
        # Markup the pane writes; every word from a file (the spec's, an event's error, a record's) is
        # escaped into it (factrecall_tui.escape: control characters written out, `[/]` shown as it is).
        if run is None:
            detail.update(
                f"No runs in {escaped(self.workspace / RUNS)} yet: press [b]n[/] to launch one "
                "(or `factrecall-jobs submit` from a shell)."
            )
            return
        if run.status == "broken":
            detail.update(f"[b]{escaped(run.name)}[/]\n[red]cannot read this run:[/] {escaped(run.error)}")
            return
        lines = [f"[b]{escaped(run.title)}[/]"]
        steps = run.steps
        done = [s for s in steps if s in run.steps_done]
        lines.append(f"steps done {len(done)}/{len(steps)}: {', '.join(done) or '–'}")
        if run.status in ("failed", "interrupted") and run.last_run.get("error"):
            lines.append(
                f"[{STATUS_STYLE[run.status]}]{run.status}:[/] {escaped(run.last_run['error'])}  "
                "[dim](r resumes it; l shows its log)[/]"
            )
        elif run.status == "stopped":
            lines.append("[magenta]stopped without a word (killed?)[/]: r resumes it from its last checkpoint")
        elif run.status == "running" and run.job:
            lines.append(f"[dim]{escaped(run.job)} · c stops it (what it finished is kept)[/]")
        elif run.status == "running" and run.pid:
            lines.append(f"[dim]pid {run.pid} · c stops it (what it finished is kept)[/]")
        elif run.status == "queued" and run.job:
            lines.append(f"[dim]{escaped(run.job)}, waiting for the scheduler · c cancels it[/]")
        elif run.status == "queued":
            lines.append("[dim]waiting for a free slot · c takes it off the queue[/]")
        detail.update("\n".join(lines), layout=False)

    # -- actions ---------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        run = self.selected
        if run is None:
            return
        if run.status not in ("queued", "running"):
            self.notify(f"{run.name} is {run.status}: nothing to cancel", severity="warning")
            return
        if run.status == "queued":  # nothing lost: off the queue at once
            self._cancel(run.name)
            return
        where = f" (step {escaped(run.progress['step'])})" if run.progress.get("step") else ""
        self.app.push_screen(
            Confirm(
                f"Stop [b]{escaped(run.name)}[/b]{where}? What it finished and its last checkpoint are "
                "kept; r resumes it.",
                yes="Stop it",
                no="Keep it running",
            ),
            lambda yes: self._cancel(run.name) if yes else None,
        )

    def _cancel(self, name: str) -> None:
        try:
            said = cancel(self.workspace, name)
        except (OSError, *USER_ERRORS) as err:
            self.notify(f"{name}: cannot cancel: {first_line(err)}", severity="error")
            return
        if "stopping" in said:
            self.stopping.add(name)
        self.notify(said)
        self.post_message(Rescan())

    def action_resume(self) -> None:
        run = self.selected
        if run is None:
            return
        if run.status in ("queued", "running", "broken", "done"):
            why = {"done": "nothing to resume", "broken": "its folder cannot be read"}.get(
                run.status, "already on its way"
            )
            self.notify(f"{run.name} is {run.status}: {why}", severity="warning")
            return
        try:
            submit(self.workspace, run.name)
        except (OSError, *USER_ERRORS) as err:
            self.notify(first_line(err), severity="error")
            return
        self.notify(f"{run.name}: queued to resume")
        self.post_message(Rescan())

    def action_compare(self) -> None:
        """m: the runs shown (the filter's, if any) side by side, as `factrecall-jobs compare`."""
        shown = [self.runs[n] for n in self._rows if self.runs[n].metrics]
        if not shown:
            self.notify("no run shown has results to compare yet", severity="warning")
            return
        what = f"{len(shown)} run{'s' * (len(shown) != 1)}" + (
            f" matching {self.query_text!r}" if self.query_text.strip() else ""
        )
        self.post_message(Compare([r.path for r in shown], what))

    def action_remove(self, delete: bool) -> None:
        """x archives the selected run (to WORKSPACE/archive/, out of every list), D deletes it; each
        asks first, and a queued or running run must be cancelled first."""
        run = self.selected
        if run is None:
            return
        if run.status in ("queued", "running"):
            self.notify(f"{run.name} is {run.status}: cancel it first (c)", severity="warning")
            return
        if delete:
            question = (
                f"Delete [b]{escaped(run.name)}[/b] and everything in it (checkpoints, activation store, "
                "metrics) for good? x archives it instead."
            )
            yes = "Delete it"
        else:
            question = (
                f"Archive [b]{escaped(run.name)}[/b]? It moves to {escaped(self.workspace / ARCHIVE)}: out of every "
                "list; moving it back to runs/ restores it."
            )
            yes = "Archive it"
        try:
            studies = [s.name for s in find_studies(self.workspace) if run.name in s.runs]
        except (OSError, *USER_ERRORS):  # the studies cannot be read: the question cannot name them
            studies = []
        if studies:  # its study's report stays as written; the study run again would train it anew
            question += (
                f" It is a run of the study {escaped(', '.join(studies))}: the report stays, but the study "
                "counts it as missing, and run again would train it anew."
            )
        self.app.push_screen(
            Confirm(question, yes=yes, no="Keep it"), lambda sure: self._remove(run.name, delete) if sure else None
        )

    @work(thread=True, group="remove", exit_on_error=False)
    def _remove(self, name: str, delete: bool) -> None:
        """In a thread: a deleted store can be thousands of files."""
        try:
            self.post_message(self.Removed(said=remove_run(self.workspace, name, delete=delete)))
        except (OSError, *USER_ERRORS) as err:
            self.post_message(self.Removed(error=f"{name}: {first_line(err)}"))

    @on(Removed)
    def _removed(self, message: Removed) -> None:
        if message.error:
            self.notify(message.error, severity="error", timeout=10)
            return
        self.notify(message.said)
        self.post_message(Rescan())

    def action_log(self) -> None:
        if (run := self.selected) is not None:
            self.post_message(OpenLog(run.path))

    def action_open(self, tab: RunTab) -> None:
        if (run := self.selected) is not None:
            self.post_message(OpenRun(tab, run.name))
