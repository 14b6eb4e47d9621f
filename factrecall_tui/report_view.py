"""The Report pane: the studies of `factrecall-jobs reproduce` in the workspace (WORKSPACE/reproduce/NAME)
and each one's report.md.

The list on the left names every study with how far it is (its runs finished, report written) and,
once written, its verdicts; the right shows the chosen report as Markdown (tables as tables; each
figure as a line naming its PNG, which a terminal cannot draw). A report rewritten on disk (the
study resumed, or run again) is reloaded on the next scan. `s` opens the New study form
(factrecall_tui/study_form.py); a study queued from it shows here from the moment it is queued, and
while it runs, how far it is (its runs, then its probe sweeps: progress.json); `c` cancels it. The pane
reads plan.json, progress.json, report.json and report.md, the queue's entries, and the runs'
summaries the app already has.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Markdown, OptionList, Static
from textual.widgets.option_list import Option

from textual.binding import Binding

from factrecall_tui.confirm import Confirm
from factrecall_tui.messages import OpenFigures, Rescan
from factrecall_tui.pane import when_mounted
from factrecall_tui.quiet import Line
from factrecall_tui.runs import RunSummary
from jobs.errors import USER_ERRORS, first_line
from jobs.launch.queue import cancel, queued_studies, study_key, study_progress_text

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
SHORT = {"reproduces": "✓", "partly": "~", "does not reproduce": "✗"}


@dataclass
class StudySummary:
    """A study folder as the list shows it: its runs, and its report's time and verdicts once written."""

    name: str
    folder: Path
    runs: list[str]
    report_mtime: float | None
    claims: list[dict]
    queue: str = ""       # queued, or running: a study the workspace queue holds
    progress: str = ""    # how far it is while it runs (progress.json), e.g. `probes 12/90`

    def status(self, runs: dict[str, RunSummary]) -> str:
        if self.queue == "queued":
            return "queued: waits for a free slot"
        if self.queue == "running":
            return f"running · {self.progress or 'starting'}"
        finished = sum(1 for r in self.runs if r in runs and runs[r].status == "done")
        if self.report_mtime is not None and finished == len(self.runs):
            verdicts = " ".join(f"{c['id']}{SHORT.get(c['verdict'], '?')}" for c in self.claims)
            return f"report · {verdicts}"
        active = [r for r in self.runs if r in runs and runs[r].status in ("running", "queued")]
        return f"{finished}/{len(self.runs)} runs done" + (" · running" if active else "")


def find_studies(workspace: Path) -> list[StudySummary]:
    """Every study folder with a readable plan.json, and every study the queue holds, by name."""
    queue = queued_studies(workspace)
    out = []
    for plan_file in sorted((workspace / "reproduce").glob("*/plan.json")):
        folder = plan_file.parent
        try:
            plan = json.loads(plan_file.read_text())
            runs = [Path(r).name for r in plan["runs"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        report = folder / "report.md"
        claims: list[dict] = []
        mtime = None
        if report.exists():
            mtime = report.stat().st_mtime
            try:
                claims = json.loads((folder / "report.json").read_text()).get("claims", [])
            except (OSError, ValueError):
                claims = []
        out.append(StudySummary(folder.name, folder, runs, mtime, claims, queue.get(folder.name, ""),
                                study_progress_text(folder) if folder.name in queue else ""))
    listed = {s.name for s in out}
    for name, state in queue.items():  # queued, or started and not planned yet: no plan.json
        if name not in listed:
            folder = workspace / "reproduce" / name
            out.append(StudySummary(name, folder, [], None, [], state, study_progress_text(folder)))
    return sorted(out, key=lambda s: s.name)


def figures_of(markdown: str, folder: Path) -> list[tuple[str, Path]]:
    """The figures a report links, (name, PNG path), those whose file is there."""
    return [(m.group(1), folder / m.group(2)) for m in _IMAGE.finditer(markdown) if (folder / m.group(2)).is_file()]


def for_terminal(markdown: str, folder: Path) -> str:
    """A figure a terminal cannot draw becomes a line that says where its PNG is."""
    return _IMAGE.sub(lambda m: f"*[figure: {m.group(1)} → {folder / m.group(2)}]*", markdown)


class ReportPane(Horizontal):
    """The studies (left) and the chosen study's report (right)."""

    BINDINGS = [Binding("s", "app.reproduce", "New study"), Binding("g", "figures", "Figures"),
                Binding("c", "cancel_study", "Cancel study")]

    def __init__(self, workspace: Path, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.studies: dict[str, StudySummary] = {}
        self.current: str | None = None
        self._shown_mtime: float | None = None
        self._labels: list[str] = []

    def compose(self) -> ComposeResult:
        yield OptionList(id="report-studies")
        with VerticalScroll(id="report-body"):
            yield Line("", id="report-status")
            yield Markdown("", id="report-doc", open_links=False)

    @when_mounted
    def show(self, runs: list[RunSummary]) -> None:
        """Every scan: the studies and their progress; the open report again if it was rewritten."""
        by_name = {r.name: r for r in runs}
        studies = find_studies(self.workspace)
        self.studies = {s.name: s for s in studies}
        labels = [f"{s.name}\n[dim]{s.status(by_name)}[/dim]" for s in studies]
        if labels != self._labels:  # rebuilt only when a study or its progress changed
            self._labels = labels
            options = self.query_one("#report-studies", OptionList)
            highlighted = options.highlighted
            options.clear_options()
            options.add_options([Option(label, id=s.name) for label, s in zip(labels, studies)])
            if studies:
                options.highlighted = min(highlighted or 0, len(studies) - 1)
        if self.current is None and studies:
            self.open(studies[0].name)
        elif self.current in self.studies:
            self.open(self.current)
        elif not studies:
            self._status("no study in this workspace yet: s starts one (the paper's whole study, "
                         "`factrecall-jobs reproduce` from a shell); its runs show in Jobs while they train, and its "
                         "report here")

    def _status(self, text: str) -> None:
        self.query_one("#report-status", Static).update(text)

    def open(self, name: str) -> None:
        """Show study `name`'s report (again only if it changed on disk)."""
        study = self.studies[name]
        if study.report_mtime is None:  # how far it is: said again on every scan (it moves on)
            where = {"queued": "queued, waiting for a free slot", "running": f"running ({study.progress or 'starting'}); "
                     f"its console: {study.folder / 'job.out'}"}.get(study.queue, "no report yet")
            self._status(f"{name}: {where}; `factrecall-jobs reproduce` writes {study.folder / 'report.md'} "
                         "once its runs and probes are done")
        if name == self.current and study.report_mtime == self._shown_mtime:
            return
        self.current, self._shown_mtime = name, study.report_mtime
        doc = self.query_one("#report-doc", Markdown)
        if study.report_mtime is None:
            doc.update("")
            return
        self._status(f"{study.folder / 'report.md'}")
        doc.update(for_terminal((study.folder / "report.md").read_text(), study.folder))

    @on(OptionList.OptionSelected, "#report-studies")
    @on(OptionList.OptionHighlighted, "#report-studies")
    def _chosen(self, event: OptionList.OptionSelected | OptionList.OptionHighlighted) -> None:
        if event.option.id in self.studies:
            self.open(event.option.id)

    def action_figures(self) -> None:
        """g: the chosen study's report figures, drawn in the terminal (factrecall_tui/figures_view.py)."""
        study = self.studies.get(self.current or "")
        if study is None or study.report_mtime is None:
            self.notify("no report chosen yet: its figures come with it", severity="warning")
            return
        try:
            figures = figures_of((study.folder / "report.md").read_text(), study.folder)
        except OSError as err:
            self.notify(f"cannot read {study.folder / 'report.md'}: {err.strerror}", severity="error")
            return
        if not figures:
            self.notify(f"{study.name}'s report links no figure that is there", severity="warning")
            return
        self.post_message(OpenFigures(study.name, figures))

    def action_cancel_study(self) -> None:
        """c: take the chosen study off the queue, or stop it after asking (the run it is training keeps
        its work; the same options queued again continue it)."""
        study = self.studies.get(self.current or "")
        if study is None or not study.queue:
            self.notify("no queued or running study chosen (a finished study has nothing to cancel)", severity="warning")
            return
        if study.queue == "queued":
            self._cancel(study.name)
            return
        self.app.push_screen(Confirm(f"Stop the study [b]{study.name}[/b] ({study.progress or 'starting'})? What it "
                                     "finished is kept; queued again with the same options, it continues.",
                                     yes="Stop it", no="Keep it running"),
                             lambda yes: self._cancel(study.name) if yes else None)

    def _cancel(self, name: str) -> None:
        try:
            said = cancel(self.workspace, study_key(name))
        except (OSError, *USER_ERRORS) as err:
            self.notify(f"{name}: cannot cancel: {first_line(err)}", severity="error")
            return
        self.notify(said.replace(study_key(name), f"study {name}"))
        self.post_message(Rescan())
