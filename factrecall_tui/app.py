"""`factrecall-tui [WORKSPACE]`: launch and follow jobs, browse accuracies, fit probes, read stores.

Five screens, one per tab (keys 1-5, as the tabs say): Jobs, Accuracy, Probes, Store, Report. The
workspace is scanned in a thread worker once a second (only changed and active runs are re-read);
jobs run as separate `factrecall-jobs` processes through the workspace queue, so closing the app
stops nothing and reopening it finds them again. ctrl+p opens the command palette.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.segment import Segment
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.color import Color
from textual.filter import LineFilter
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Header, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from factrecall_tui.accuracy import AccuracyPane
from factrecall_tui.compare_view import CompareScreen
from factrecall_tui.figures_view import FiguresScreen  # before the app runs: it asks the terminal what it can draw
from factrecall_tui.help import ABOUT, HelpScreen, keys_of
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.launch import LaunchScreen
from factrecall_tui.log_view import LogScreen
from factrecall_tui.messages import (
    Compare,
    Export,
    OpenFigures,
    OpenLog,
    OpenRun,
    Rescan,
    RunsScanned,
    RunTab,
    ScanFailed,
)
from factrecall_tui.pane import OpensRuns, ShowsRuns
from factrecall_tui.probes import ProbesPane
from factrecall_tui.quiet import Footer
from factrecall_tui.remembered import Remembered
from factrecall_tui.report_view import ReportPane
from factrecall_tui.runs import RunSummary, Scanner
from factrecall_tui.store_view import StorePane
from factrecall_tui.study_form import StudyScreen
from factrecall_tui.tabs import Tabs
from jobs.errors import USER_ERRORS, first_line
from jobs.run.files import atomic_write_bytes
from jobs.run.workspace import EXPORTS, SCREENSHOTS
from jobs.run.workspace import folder as workspace_folder
from jobs.shown import visible

TABS = {"jobs": "Jobs", "accuracy": "Accuracy", "probes": "Probes", "store": "Store", "report": "Report"}
SCAN_EVERY_S = 1.0
_NOT_IN_A_FILE_NAME = re.compile(r"[^A-Za-z0-9._+=-]")


class Shown(LineFilter):
    """The app's output sanitizer, a safety net under every widget: each line any widget draws (a
    toast, a table cell, the header, a log, a tree...) passes through the app's line filters before
    it reaches the terminal (textual/_styles_cache.py), and here every piece of text that holds a
    control character, a lone surrogate or a bidirectional override has it written out as its escape
    (`jobs.shown.visible`), so an ESC from a handed-over file is shown, never acted on. The segments a
    renderer marks as control are its own and pass. A line made longer by the escapes is cut back to
    its width (what is cut was never laid out): the entry points make text visible before layout, so
    widths are right; this only catches what they missed."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        out: list[Segment] | None = None
        for i, segment in enumerate(segments):
            if segment.control:
                continue
            text = visible(segment.text, lines=True)
            if text is not segment.text:  # something to escape (visible returns its argument when not)
                if out is None:
                    out = list(segments)
                out[i] = Segment(text, segment.style, segment.control)
        if out is None:
            return segments
        return Segment.adjust_line_length(out, Segment.get_line_length(segments))


class FactrecallApp(App):
    CSS_PATH = [
        "app.tcss",
        "launch.tcss",
        "accuracy.tcss",
        "probes.tcss",
        "store_view.tcss",
        "report_view.tcss",
        "study_form.tcss",
    ]
    TITLE = "factrecall"
    BINDINGS = [
        Binding("1", "tab('jobs')", "Jobs", show=False),
        Binding("2", "tab('accuracy')", "Accuracy", show=False),
        Binding("3", "tab('probes')", "Probes", show=False),
        Binding("4", "tab('store')", "Store", show=False),
        Binding("5", "tab('report')", "Report", show=False),
        Binding("n", "launch", "New job"),
        Binding("ctrl+r", "rescan", "Reload", show=False),
        Binding("question_mark", "help", "Help"),
        # F1 is a priority key so that it works on the pushed screens too (a modal screen hides the
        # app's other keys); `?` is not, so that it stays a character in a text field.
        Binding("f1", "help", "Help", show=False, priority=True),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        workspace: Path,
        scan_every: float = SCAN_EVERY_S,
        remembered: Remembered | None = None,
        freeze_gc: bool = False,
    ):
        super().__init__()
        self.freeze_gc = freeze_gc  # the process is the app's: gc.freeze() once the runs are shown
        self.workspace = workspace
        self.remembered = Remembered() if remembered is None else remembered  # factrecall_tui/remembered.py
        self.scanner = Scanner(workspace)
        self.runs: list[RunSummary] = []
        self._shown = False  # the panes have been shown a scan
        self.scan_every = scan_every
        self._scanning = False
        self._scan_error = ""  # the last scan's failure, said once until it changes
        self._focus_after_scan: str | None = None
        self._shown_filter = Shown()  # one instance: strips cache what each filter made of them

    def compose(self) -> ComposeResult:
        yield Header()
        with Tabs(initial="jobs"):
            with TabPane(f"1 {TABS['jobs']}", id="jobs"):
                yield JobsPane(self.workspace, id="jobs-pane")
            with TabPane(f"2 {TABS['accuracy']}", id="accuracy"):
                yield AccuracyPane(id="accuracy-pane")
            with TabPane(f"3 {TABS['probes']}", id="probes"):
                yield ProbesPane(id="probes-pane", remembered=self.remembered, workspace=self.workspace)
            with TabPane(f"4 {TABS['store']}", id="store"):
                yield StorePane(id="store-pane")
            with TabPane(f"5 {TABS['report']}", id="report"):
                yield ReportPane(self.workspace, id="report-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = visible(self.workspace)  # the user's choice, but a path may hold anything
        if (theme := self.remembered.text("theme")) in self.available_themes:
            self.theme = theme
        self.theme_changed_signal.subscribe(self, lambda theme: self.remembered.set_theme(theme.name))
        self.remembered.tell(lambda line: self.notify(line, severity="warning", timeout=10))
        self.query_one("#jobs-table").focus()
        self.rescan()
        if self.scan_every:
            self.set_interval(self.scan_every, self.rescan)

    # -- what reaches the terminal ----------------------------------------------------------------
    def get_line_filters(self) -> Sequence[LineFilter]:
        """Textual's filters, then the sanitizer (`Shown`) under every line drawn."""
        return [*super().get_line_filters(), self._shown_filter]

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification of this app is plain text, whatever its caller asks (widgets pass
        markup=True by default): most carry a file's words, a run's error, a path; none is written
        as markup. Control characters are written out (`visible`)."""
        super().notify(
            visible(message, lines=True), title=visible(title), severity=severity, timeout=timeout, markup=False
        )

    # -- the workspace ---------------------------------------------------------------------------
    def rescan(self) -> None:
        if not self._scanning:  # one scan at a time: a thread cannot be cancelled, only waited for
            self._scanning = True
            self._scan()

    def action_rescan(self) -> None:
        self.rescan()

    @work(thread=True, group="scan", exit_on_error=False)
    def _scan(self) -> None:
        try:
            runs = self.scanner.scan()
        except OSError as err:  # the workspace unreadable (a lost mount): said, and read again next time
            self.post_message(ScanFailed(f"cannot read {self.workspace}: {err.strerror or err}"))
            return
        except USER_ERRORS as err:  # e.g. WORKSPACE/runs a symbolic link (jobs.run.workspace)
            self.post_message(ScanFailed(first_line(err)))
            return
        self.post_message(RunsScanned(runs))

    @on(ScanFailed)
    def _scan_failed(self, message: ScanFailed) -> None:
        self._scanning = False
        if message.error != self._scan_error:  # once, not at every scan, until it changes
            self._scan_error = message.error
            self.notify(message.error, severity="error", timeout=10)

    @on(RunsScanned)
    def _show(self, message: RunsScanned) -> None:
        self._scanning = False
        self._scan_error = ""
        if not self.is_running:  # a scan that ended as the app closes: its screens are gone
            return
        # A steady rescan hands back the very objects of the runs that did not change: when none did,
        # Jobs, Accuracy and Probes have nothing to redraw. Store and Report are told every scan: they
        # watch files a run's own do not show (a probe cache written from a shell, a new study folder).
        same = (
            self._shown and len(message.runs) == len(self.runs) and all(a is b for a, b in zip(message.runs, self.runs))
        )
        first = not self._shown
        self._shown = True
        self.runs = message.runs
        told = {"store": self.query_one(StorePane)} if same else self._run_panes()
        panes: list[ShowsRuns] = [*told.values(), self.query_one(ReportPane)]
        for pane in panes:
            pane.show(self.runs)
        if first and self.freeze_gc:
            gc.freeze()
        if self._focus_after_scan and any(r.name == self._focus_after_scan for r in self.runs):
            self.query_one(JobsPane).focus_run(self._focus_after_scan)
            self._focus_after_scan = None

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """The one place an unexpected background failure surfaces: a notification, never a crash.
        The panes hand their workers' failures here (factrecall_tui.pane.HandsFailuresUp)."""
        if event.state == WorkerState.ERROR:
            if event.worker.group == "scan":
                self._scanning = False
            error = event.worker.error
            text = first_line(error, with_type=True) if error is not None else "failed"
            self.notify(f"{event.worker.group}: {text}", severity="error", timeout=10)

    @on(Compare)
    def _compare(self, message: Compare) -> None:
        self.push_screen(CompareScreen(message.paths, message.what))

    @on(OpenFigures)
    def _figures(self, message: OpenFigures) -> None:
        self.push_screen(FiguresScreen(message.study, message.figures))

    @on(Export)
    def _export(self, message: Export) -> None:
        """A table as CSV: into WORKSPACE/exports (written whole, by rename) and onto the clipboard
        (the terminal's OSC 52: over ssh too, where the terminal allows it)."""
        # The name is the app's words, but may hold a store's (a probe's attribute): never a path.
        what = _NOT_IN_A_FILE_NAME.sub("_", message.what)
        try:
            exports = workspace_folder(self.workspace, EXPORTS, make=True)  # never through a link (jobs.run.workspace)
            path = exports / f"{what}-{time.strftime('%Y%m%d-%H%M%S')}.csv"
            atomic_write_bytes(path, message.csv.encode())
        except (OSError, *USER_ERRORS) as err:
            self.notify(
                f"cannot export to {self.workspace / EXPORTS}: {getattr(err, 'strerror', None) or first_line(err)}",
                severity="error",
                timeout=10,
            )
            return
        self.copy_to_clipboard(message.csv)
        rows = message.csv.count("\n") - 1
        self.notify(f"{rows} rows written to {path} and copied to the clipboard", title="Export")

    # -- navigation ------------------------------------------------------------------------------
    def _run_panes(self) -> dict[RunTab, OpensRuns]:
        return {
            "jobs": self.query_one(JobsPane),
            "accuracy": self.query_one(AccuracyPane),
            "probes": self.query_one(ProbesPane),
            "store": self.query_one(StorePane),
        }

    def action_tab(self, tab: str) -> None:
        self.query_one(Tabs).show(tab)

    def open_run(self, tab: RunTab, name: str) -> None:
        """Switch to `tab` with run `name` in front."""
        self.action_tab(tab)
        self._run_panes()[tab].focus_run(name)

    @on(OpenRun)
    def _open_run_asked(self, message: OpenRun) -> None:
        if self.is_running:  # not once the app closes (its screens are gone)
            self.open_run(message.tab, message.name)

    @on(OpenLog)
    def _open_log_asked(self, message: OpenLog) -> None:
        if self.is_running:
            self.push_screen(LogScreen(message.run_path))

    @on(Rescan)
    def _rescan_asked(self) -> None:
        self.rescan()

    @on(TabbedContent.TabActivated)
    def _focus_tab(self, event: TabbedContent.TabActivated) -> None:
        """A tab the user clicked: keys go to it (its first focusable widget takes the focus)."""
        self.query_one(Tabs).focus_shown()

    def action_help(self) -> None:
        """The keys of the screen in front, and what it is for (factrecall_tui/help.py)."""
        if isinstance(self.screen, HelpScreen):  # F1 again closes it
            self.screen.dismiss()
            return
        screen = self.screen
        if screen is self.screen_stack[0]:  # the tabs: the shown one's name and purpose
            tab = self.query_one(Tabs).active
            title, about = f"Keys · {TABS.get(tab, tab)}", ABOUT.get(tab, "")
        else:
            name, about = getattr(screen, "HELP", (type(screen).__name__, ""))  # (its name, what it is for)
            title = f"Keys · {name}"
        self.push_screen(HelpScreen(title, about, keys_of(self, screen)))

    def action_reproduce(self) -> None:
        """The New study form (factrecall_tui/study_form.py); a queued study is followed on Report."""

        def queued(name: str | None) -> None:
            if name:
                self.notify(f"queued the study {name}: the Report tab follows it")
                self.action_tab("report")
                self.rescan()

        self.push_screen(StudyScreen(self.workspace), queued)

    def action_launch(self) -> None:
        def launched(names: list[str] | None) -> None:
            if names:
                self.notify(f"queued {', '.join(names)}")
                self.action_tab("jobs")
                self._focus_after_scan = names[0]
                self.rescan()

        self.push_screen(LaunchScreen(self.workspace, self.remembered), launched)

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        """A screenshot (palette, or ctrl+p) goes into WORKSPACE/screenshots (a server has no ~/Downloads,
        where Textual puts it), and the app says where it went."""
        where = Path(path) if path else self.workspace / SCREENSHOTS
        try:
            if not path:  # the workspace's own folder: never through a link (jobs.run.workspace)
                where = workspace_folder(self.workspace, SCREENSHOTS, make=True)
            else:
                where.mkdir(parents=True, exist_ok=True)
            saved = self.save_screenshot(filename, str(where), time_format)
        except (OSError, *USER_ERRORS) as err:
            self.notify(
                f"cannot save the screenshot in {where}: {getattr(err, 'strerror', None) or first_line(err)}",
                severity="error",
                timeout=10,
            )
            return None
        self.notify(f"screenshot saved: {saved}", title="Screenshot")
        return saved

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("New job", "Launch runs: strategy, seeds, people, model, device", self.action_launch)
        yield SystemCommand(
            "Reproduce the paper (new study)",
            "factrecall-jobs reproduce through the queue: its plan first, then its runs, probes and report",
            self.action_reproduce,
        )
        jobs = self.query_one(JobsPane)
        if (run := jobs.selected) is not None:  # they name the run they act on, and show it on Jobs first

            def on_jobs(action):
                return lambda: (self.action_tab("jobs"), action())

            yield SystemCommand(
                f"Cancel job {run.name}",
                f"{run.status}: take it off the queue, or stop it (asks first)",
                on_jobs(jobs.action_cancel),
            )
            yield SystemCommand(
                f"Resume job {run.name}",
                f"{run.status}: queue it to continue where it stopped",
                on_jobs(jobs.action_resume),
            )
            yield SystemCommand(
                f"Open log of {run.name}", "Follow its log and its console output", on_jobs(jobs.action_log)
            )
        yield SystemCommand(
            "Fit probes",
            "Fit probes with the Probes screen's settings",
            lambda: (self.action_tab("probes"), self.query_one(ProbesPane).action_fit()),
        )
        for tab, label in TABS.items():
            yield SystemCommand(f"Show {label}", f"Switch to the {label} screen", lambda t=tab: self.action_tab(t))
        yield SystemCommand("Reload", "Scan the workspace again now", self.rescan)
        yield from super().get_system_commands(screen)


def collect_less() -> None:
    """Python's collector walks every object it tracks when its oldest generation fills: with a few
    hundred runs' rows and widgets that is tens of milliseconds, paid by whichever key comes then.
    Collecting less often, and setting aside what exists once the workspace is shown (the app's
    `freeze_gc`), took the first visit to Accuracy at 300 runs from about 190 ms to 60 ms to its
    first frame (benchmarks/bench_tui.py). For the app's own process only."""
    gc.set_threshold(10_000, 20, 20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="factrecall-tui", description="Launch and follow factrecall jobs, browse accuracies, fit probes."
    )
    ap.add_argument(
        "workspace",
        nargs="?",
        default=None,
        help="folder holding runs/ (default: --workspace, $FACTRECALL_WORKSPACE, or ./workspace)",
    )
    ap.add_argument("--workspace", dest="workspace_option", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    where = args.workspace or args.workspace_option or os.environ.get("FACTRECALL_WORKSPACE", "workspace")
    if not where.strip():
        ap.exit(
            2, "error: the workspace is empty (FACTRECALL_WORKSPACE= ?); give a folder, e.g. factrecall-tui workspace\n"
        )
    workspace = Path(where).expanduser()
    if workspace.exists() and not workspace.is_dir():
        ap.exit(2, f"error: workspace {workspace} is a file; give a folder (it holds runs/)\n")
    collect_less()
    app = FactrecallApp(workspace, freeze_gc=True)
    app.run()
    return app.return_code or 0  # 1 after a crash (Textual prints its traceback), not a quiet 0
