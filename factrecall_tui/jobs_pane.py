"""The Jobs screen: every run in the workspace with its status and live progress; launch, cancel,
resume, and open a run's log, accuracies, probes or store (asked of the app with the messages of
factrecall_tui/messages.py: the app decides where to go and when to scan again)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from factrecall_tui.confirm import Confirm
from factrecall_tui.messages import OpenLog, OpenRun, Rescan, RunTab
from factrecall_tui.pane import when_mounted
from factrecall_tui.runs import RunSummary, progress_text
from jobs.errors import USER_ERRORS, first_line
from jobs.launch.queue import cancel, submit
from jobs.words import RunStatus

STATUS_STYLE: dict[RunStatus, str] = {
    "done": "green", "running": "yellow", "queued": "cyan", "failed": "red", "interrupted": "magenta",
    "stopped": "magenta", "new": "dim", "broken": "red"}
# Status and progress right after the name: what a narrow terminal must still show.
COLUMNS = {"run": "Run", "status": "Status", "progress": "Progress", "strategy": "Strategy", "model": "Model",
           "seed": "Seed", "people": "People"}


def _cells(run: RunSummary, stopping: bool = False) -> tuple:
    if run.status == "running" and stopping:
        status = "stopping…"  # asked to stop: it saves its checkpoint, then ends as interrupted
    else:
        status = run.status + (" (starting)" if run.status == "running" and not run.progress else "")
    return (run.name, Text(status, style=STATUS_STYLE[run.status]), Text.from_markup(progress_text(run)),
            run.strategies, run.model, run.seed, run.people)


class JobsPane(Vertical):
    BINDINGS = [
        Binding("c", "cancel", "Cancel"),
        Binding("r", "resume", "Resume"),
        Binding("l", "log", "Log"),
        Binding("a", "open('accuracy')", "Accuracy"),
        Binding("p", "open('probes')", "Probes"),
        Binding("s", "open('store')", "Store"),
    ]

    def __init__(self, workspace: Path, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.runs: dict[str, RunSummary] = {}
        self._rows: dict[str, tuple] = {}
        self.stopping: set[str] = set()  # runs asked to stop, until they do

    def compose(self) -> ComposeResult:
        yield DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="job-detail")

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

    # -- data ------------------------------------------------------------------------------------
    @when_mounted
    def show(self, runs: list[RunSummary]) -> None:
        table = self.query_one(DataTable)
        self.runs = {r.name: r for r in runs}
        self.stopping &= {r.name for r in runs if r.status == "running"}  # stopped by now: no longer stopping
        order = [r.name for r in runs]
        if order != list(self._rows):
            chosen = self.selected.name if self.selected else None
            table.clear()
            self._rows = {}
            for run in runs:
                self._rows[run.name] = _cells(run, run.name in self.stopping)
                table.add_row(*self._rows[run.name], key=run.name)
            if chosen in self.runs:
                table.move_cursor(row=order.index(chosen), animate=False)
        else:
            for run in runs:
                cells = _cells(run, run.name in self.stopping)
                old = self._rows[run.name]
                for key, new, was in zip(COLUMNS, cells, old):
                    if str(new) != str(was) or (isinstance(new, Text) and new.spans != was.spans):
                        table.update_cell(run.name, key, new, update_width=True)
                self._rows[run.name] = cells
        self._detail()

    @property
    def selected(self) -> RunSummary | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.runs.get(key)

    @when_mounted
    def focus_run(self, name: str) -> None:
        if name in self._rows:
            self.query_one(DataTable).move_cursor(row=list(self._rows).index(name), animate=False)

    @on(DataTable.RowSelected)
    def _open_log(self) -> None:
        """Enter (or a click on the selected row) opens the run's log."""
        self.action_log()

    @on(DataTable.RowHighlighted)
    def _detail(self) -> None:
        detail = self.query_one("#job-detail", Static)
        run = self.selected
        if run is None:
            detail.update(f"No runs in {self.workspace / 'runs'} yet: press [b]n[/] to launch one "
                          "(or `factrecall-jobs submit` from a shell).")
            return
        if run.status == "broken":
            detail.update(f"[b]{run.name}[/]\n[red]cannot read this run:[/] {run.error}")
            return
        lines = [f"[b]{run.title}[/]"]
        steps = run.steps
        done = [s for s in steps if s in run.steps_done]
        lines.append(f"steps done {len(done)}/{len(steps)}: {', '.join(done) or '–'}")
        if run.status in ("failed", "interrupted") and run.last_run.get("error"):
            lines.append(f"[{STATUS_STYLE[run.status]}]{run.status}:[/] {run.last_run['error']}  "
                         "[dim](r resumes it; l shows its log)[/]")
        elif run.status == "stopped":
            lines.append("[magenta]stopped without a word (killed?)[/]: r resumes it from its last checkpoint")
        elif run.status == "running" and run.job:
            lines.append(f"[dim]{run.job} · c stops it (what it finished is kept)[/]")
        elif run.status == "running" and run.pid:
            lines.append(f"[dim]pid {run.pid} · c stops it (what it finished is kept)[/]")
        elif run.status == "queued" and run.job:
            lines.append(f"[dim]{run.job}, waiting for the scheduler · c cancels it[/]")
        elif run.status == "queued":
            lines.append("[dim]waiting for a free slot · c takes it off the queue[/]")
        detail.update("\n".join(lines))

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
        where = f" (step {run.progress['step']})" if run.progress.get("step") else ""
        self.app.push_screen(Confirm(f"Stop [b]{run.name}[/b]{where}? What it finished and its last checkpoint are "
                                     "kept; r resumes it.", yes="Stop it", no="Keep it running"),
                             lambda yes: self._cancel(run.name) if yes else None)

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
            why = {"done": "nothing to resume", "broken": "its folder cannot be read"}.get(run.status, "already on its way")
            self.notify(f"{run.name} is {run.status}: {why}", severity="warning")
            return
        try:
            submit(self.workspace, run.name)
        except (OSError, *USER_ERRORS) as err:
            self.notify(first_line(err), severity="error")
            return
        self.notify(f"{run.name}: queued to resume")
        self.post_message(Rescan())

    def action_log(self) -> None:
        if (run := self.selected) is not None:
            self.post_message(OpenLog(run.path))

    def action_open(self, tab: RunTab) -> None:
        if (run := self.selected) is not None:
            self.post_message(OpenRun(tab, run.name))
