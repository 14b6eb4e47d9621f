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

A study folder may have been handed over by someone else. Every file is read through
`jobs.run.files` (a FIFO, a device, a file too large or not UTF-8 is one line, never a hang); a
report.json or plan.json of another shape shows what can be shown and says what is damaged; a folder
whose name factrecall could not have written is not listed; WORKSPACE/reproduce is never reached
through a link. The files' words are shown as text: never parsed as markup, control characters
written out (`jobs.shown`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Markdown, OptionList, Static
from textual.widgets.option_list import Option

from factrecall_tui.confirm import Confirm
from factrecall_tui.escape import escaped
from factrecall_tui.messages import OpenFigures, Rescan
from factrecall_tui.pane import when_mounted
from factrecall_tui.quiet import Line
from factrecall_tui.runs import RunSummary
from jobs.errors import USER_ERRORS, RunFolderError, first_line
from jobs.launch.queue import cancel, queued_studies, study_key, study_progress_text
from jobs.run.files import read_json, read_text
from jobs.run.spec import is_name
from jobs.run.workspace import REPRODUCE
from jobs.run.workspace import folder as workspace_folder
from jobs.shown import visible

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
SHORT = {"reproduces": "✓", "partly": "~", "does not reproduce": "✗"}
REPAIR = "run `factrecall-jobs reproduce` with the same options again to write it anew"


@dataclass
class StudySummary:
    """A study folder as the list shows it: its runs, and its report's time and verdicts once written."""

    name: str
    folder: Path
    runs: list[str]
    report_mtime: float | None
    claims: list[dict]  # {"id": text, "verdict": text} each, as far as report.json says them
    queue: str = ""  # queued, or running: a study the workspace queue holds
    progress: str = ""  # how far it is while it runs (progress.json), e.g. `probes 12/90`
    damaged: str = ""  # what of plan.json or report.json cannot be read, in one line ("" when all can)

    def status(self, runs: dict[str, RunSummary]) -> str:
        """How far the study is, in one line of plain text (the list's second line)."""
        note = f" · {'plan' if 'plan.json' in self.damaged else 'report'}.json damaged" if self.damaged else ""
        if self.queue == "queued":
            return "queued: waits for a free slot" + note
        if self.queue == "running":
            return f"running · {visible(self.progress) or 'starting'}" + note
        finished = sum(1 for r in self.runs if r in runs and runs[r].status == "done")
        if self.report_mtime is not None and finished == len(self.runs):
            verdicts = " ".join(f"{c['id']}{SHORT.get(c['verdict'], '?')}" for c in self.claims)
            return "report" + (f" · {verdicts}" if verdicts else "") + note
        active = [r for r in self.runs if r in runs and runs[r].status in ("running", "queued")]
        return f"{finished}/{len(self.runs)} runs done" + (" · running" if active else "") + note


def _plan_runs(plan: object, path: Path) -> tuple[list[str], str]:
    """The run names a plan.json lists, and what is damaged in it ("" when nothing is)."""
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list):
        return (
            [],
            f"{path} is damaged ({'no list of runs' if isinstance(plan, dict) else 'not a JSON object'}); {REPAIR}",
        )
    names = [Path(r).name for r in runs if isinstance(r, str)]
    good = [n for n in names if is_name(n)]
    if len(good) < len(runs):
        return good, f"{path} is damaged ({len(runs) - len(good)} of its {len(runs)} runs are not run names); {REPAIR}"
    return good, ""


def _claims(report: object, path: Path) -> tuple[list[dict], str]:
    """The claims of a report.json, as far as they can be read ({"id", "verdict"} each, as text), and
    what is damaged in it ("" when nothing is): a claim without a verdict shows as `?`."""
    if not isinstance(report, dict):
        return [], f"{path} is damaged (not a JSON object); {REPAIR}"
    claims = report.get("claims", [])
    if not isinstance(claims, list):
        return [], f"{path} is damaged (its claims are not a list); {REPAIR}"
    out, bad = [], 0
    for number, claim in enumerate(claims, 1):
        entry = claim if isinstance(claim, dict) else {}
        ident, verdict = entry.get("id"), entry.get("verdict")
        ok_id = isinstance(ident, (str, int)) and not isinstance(ident, bool)
        if not (ok_id and isinstance(verdict, str)):
            bad += 1
        out.append(
            {"id": visible(ident) if ok_id else str(number), "verdict": verdict if isinstance(verdict, str) else "?"}
        )
    if bad:
        return out, f"{path} is damaged ({bad} of its {len(claims)} claims lack an id or a verdict); {REPAIR}"
    return out, ""


def find_studies(workspace: Path) -> list[StudySummary]:
    """Every study folder with a plan.json, and every study the queue holds, by name; a folder whose
    name factrecall could not have written is left out. Raises RunFolderError where WORKSPACE/reproduce
    (or the queue) is a link or a file."""
    queue = {name: state for name, state in queued_studies(workspace).items() if is_name(name)}
    root = workspace_folder(workspace, REPRODUCE)
    out = []
    for plan_file in sorted(root.glob("*/plan.json")):
        folder = plan_file.parent
        if not is_name(folder.name):
            continue
        damaged = []
        try:
            runs, problem = _plan_runs(read_json(plan_file, REPAIR), plan_file)
        except RunFolderError as err:  # a FIFO, not JSON, too large: said beside the study
            runs, problem = [], first_line(err)
        damaged.append(problem)
        claims: list[dict] = []
        mtime = None
        try:
            mtime = os.stat(folder / "report.md").st_mtime  # read (through jobs.run.files) when shown
        except OSError:
            pass
        if mtime is not None:
            try:
                report = read_json(folder / "report.json", REPAIR, default={})
            except RunFolderError as err:
                claims, problem = [], first_line(err)
            else:
                claims, problem = _claims(report, folder / "report.json")
            damaged.append(problem)
        out.append(
            StudySummary(
                folder.name,
                folder,
                runs,
                mtime,
                claims,
                queue.get(folder.name, ""),
                study_progress_text(folder) if folder.name in queue else "",
                damaged=" · ".join(filter(None, damaged)),
            )
        )
    listed = {s.name for s in out}
    for name, state in queue.items():  # queued, or started and not planned yet: no plan.json
        if name not in listed:
            folder = root / name
            out.append(StudySummary(name, folder, [], None, [], state, study_progress_text(folder)))
    return sorted(out, key=lambda s: s.name)


def figures_of(markdown: str, folder: Path) -> list[tuple[str, Path]]:
    """The figures a report links, (name, PNG path), those whose file is there: a regular file inside
    the study's folder (a link in report.md to elsewhere is not followed)."""
    inside = folder.resolve()
    out = []
    for m in _IMAGE.finditer(markdown):
        path = folder / m.group(2)
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            continue
        if real.is_relative_to(inside) and real.is_file():
            out.append((m.group(1), path))
    return out


def for_terminal(markdown: str, folder: Path) -> str:
    """A figure a terminal cannot draw becomes a line that says where its PNG is."""
    return _IMAGE.sub(lambda m: f"*[figure: {m.group(1)} → {folder / m.group(2)}]*", markdown)


class ReportPane(Horizontal):
    """The studies (left) and the chosen study's report (right)."""

    BINDINGS = [
        Binding("s", "app.reproduce", "New study"),
        Binding("g", "figures", "Figures"),
        Binding("c", "cancel_study", "Cancel study"),
    ]

    def __init__(self, workspace: Path, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.studies: dict[str, StudySummary] = {}
        self.current: str | None = None
        self._shown: tuple | None = None  # what the shown report was read for: (mtime, damage)
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
        try:
            studies = find_studies(self.workspace)
        except (OSError, *USER_ERRORS) as err:  # WORKSPACE/reproduce a link, the queue unreadable
            studies, cannot = [], first_line(err)
        else:
            cannot = ""
        self.studies = {s.name: s for s in studies}
        labels = [f"{escaped(s.name)}\n[dim]{escaped(s.status(by_name))}[/dim]" for s in studies]
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
        elif cannot:
            if self.current is not None:  # the report shown is no longer what the workspace holds
                self.current = self._shown = None
                self.query_one("#report-doc", Markdown).update("")
            self._status(cannot)
        elif not studies:
            self._status(
                "no study in this workspace yet: s starts one (the paper's whole study, "
                "`factrecall-jobs reproduce` from a shell); its runs show in Jobs while they train, and its "
                "report here"
            )

    def _status(self, text: str) -> None:
        """The line above the report: plain text (it names files, and quotes their damage)."""
        self.query_one("#report-status", Static).update(Content(visible(text)))

    def open(self, name: str) -> None:
        """Show study `name`'s report (again only if it changed on disk)."""
        study = self.studies[name]
        damaged = f" · {study.damaged}" if study.damaged else ""
        if study.report_mtime is None:  # how far it is: said again on every scan (it moves on)
            where = {
                "queued": "queued, waiting for a free slot",
                "running": f"running ({study.progress or 'starting'}); its console: {study.folder / 'job.out'}",
            }.get(study.queue, "no report yet")
            self._status(
                f"{name}: {where}; `factrecall-jobs reproduce` writes {study.folder / 'report.md'} "
                f"once its runs and probes are done{damaged}"
            )
        shown = (study.report_mtime, study.damaged)
        if name == self.current and shown == self._shown:
            return
        self.current, self._shown = name, shown
        doc = self.query_one("#report-doc", Markdown)
        if study.report_mtime is None:
            doc.update("")
            return
        try:
            text = read_text(study.folder / "report.md", REPAIR)
        except RunFolderError as err:  # a FIFO, a device, not UTF-8, too large: one line, nothing shown
            self._status(first_line(err) + damaged)
            doc.update("")
            return
        self._status(f"{study.folder / 'report.md'}{damaged}")
        # Markdown, as the report is; its control characters written out (newlines and tabs kept).
        doc.update(for_terminal(visible(text, lines=True), study.folder))

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
            figures = figures_of(read_text(study.folder / "report.md", REPAIR), study.folder)
        except RunFolderError as err:
            self.notify(first_line(err), severity="error")
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
            self.notify(
                "no queued or running study chosen (a finished study has nothing to cancel)", severity="warning"
            )
            return
        if study.queue == "queued":
            self._cancel(study.name)
            return
        self.app.push_screen(
            Confirm(
                f"Stop the study [b]{escaped(study.name)}[/b] ({escaped(study.progress or 'starting')})? What it "
                "finished is kept; queued again with the same options, it continues.",
                yes="Stop it",
                no="Keep it running",
            ),
            lambda yes: self._cancel(study.name) if yes else None,
        )

    def _cancel(self, name: str) -> None:
        try:
            said = cancel(self.workspace, study_key(name))
        except (OSError, *USER_ERRORS) as err:
            self.notify(f"{name}: cannot cancel: {first_line(err)}", severity="error")
            return
        self.notify(said.replace(study_key(name), f"study {name}"))
        self.post_message(Rescan())
