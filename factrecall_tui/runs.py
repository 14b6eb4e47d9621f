"""What the TUI knows about a workspace, read from run folders' files only (spec.json,
metrics.json, events.jsonl, run.lock, the queue and the Slurm registry): no model code is imported
into the UI process, and nothing is written. A run's status is `jobs.launch.queue.run_status`'s, the
same as `factrecall-jobs status` says; `broken` where the folder cannot be read.

A run folder may have been handed over by someone else: a folder whose name factrecall could not have
written is not listed (`jobs.run.spec.is_name`), WORKSPACE/runs is never reached through a link
(`jobs.run.workspace`), and what a RunSummary says of its spec (`strategies`, `model`, `title`...) is
text for the screen, whatever the spec's values are: of any type, control characters written out
(`jobs.shown.visible`); `progress_text` is markup the app wrote, with the file's words escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jobs.errors import USER_ERRORS, RunFolderError, first_line
from jobs.launch import slurm
from jobs.launch.queue import queued_runs, run_status
from jobs.run.files import read_json
from jobs.run.folder import read_metrics
from jobs.run.spec import is_name
from jobs.run.workspace import RUNS
from jobs.run.workspace import folder as workspace_folder
from jobs.shown import markup, visible
from jobs.words import CHAINS, RunStatus, steps_of
from store.names import STORE_NAME


def _section(spec: dict, key: str) -> dict:
    """A section of a spec (`data`, `model`, `train`) as a dict: {} where a spec says otherwise."""
    value = spec.get(key)
    return value if isinstance(value, dict) else {}


def _said(value: object) -> str:
    """A spec's value as one line of text for the screen ('?' where there is none)."""
    return "?" if value is None else visible(value)


@dataclass
class RunSummary:
    name: str
    path: Path
    spec: dict
    metrics: dict
    status: RunStatus
    last_run: dict = field(default_factory=dict)  # the last `run` event (status, error, phases)
    progress: dict = field(default_factory=dict)  # the last `progress` or `start` event of the job now running
    steps_done: list[str] = field(default_factory=list)
    pid: int | None = None
    error: str = ""  # why the folder could not be read (status `broken`)
    mtime: float = 0.0
    job: str = ""  # `slurm job 4242_1`, for a run submitted to Slurm

    @property
    def strategies(self) -> str:
        chosen = self.spec.get("strategies", [])
        if isinstance(chosen, str) or not isinstance(chosen, list):
            return _said(chosen) if chosen else "?"
        return visible("+".join(map(str, chosen))) or "?"

    @property
    def model(self) -> str:
        m = _section(self.spec, "model")
        if m.get("path"):
            return visible(Path(str(m["path"])).name)
        return f"llama {_said(m.get('layers'))}x{_said(m.get('hidden'))}" if m else "?"

    @property
    def seed(self) -> str:
        return _said(self.spec.get("seed"))

    @property
    def people(self) -> str:
        return _said(_section(self.spec, "data").get("people"))

    @property
    def has_store(self) -> bool:
        return (self.path / STORE_NAME / "zarr.json").exists()

    @property
    def steps(self) -> list[str]:
        """Every step of the run, in order (`jobs.words.steps_of`, as jobs/run/pipeline.py runs them);
        a strategy the spec names that factrecall does not know has none."""
        chosen = self.spec.get("strategies", [])
        known = [s for s in chosen if isinstance(s, str) and s in CHAINS] if isinstance(chosen, list) else []
        return steps_of(
            known,
            builtin_model=not _section(self.spec, "model").get("path"),
            snapshots=bool(_section(self.spec, "train").get("snapshots")),
        )

    @property
    def title(self) -> str:
        """One line saying what the run is (plain text: markup-escape it inside markup)."""
        d = _section(self.spec, "data")
        share = d.get("qa_in_fraction", 0)
        share = f"{share:.0%}" if isinstance(share, (int, float)) and not isinstance(share, bool) else _said(share)
        return (
            f"{self.name} — preset {_said(self.spec.get('preset'))}, {self.strategies}, seed {self.seed}, "
            f"{self.people} people ({share} QA-in), {self.model}"
        )


def read_run(folder: Path, queued: dict[str, str] | None = None, dropped: dict[str, str] | None = None) -> RunSummary:
    """One run folder as the TUI shows it. Never raises: an unreadable folder is status `broken`."""
    try:
        mtime = (folder / "spec.json").stat().st_mtime
        spec = read_json(folder / "spec.json", "it is the run's identity: put the run's spec.json back")
        if not isinstance(spec, dict):
            raise RunFolderError(f"{folder / 'spec.json'} is damaged (not a JSON object)")
        metrics = read_metrics(folder)
    except (OSError, *USER_ERRORS) as err:
        return RunSummary(folder.name, folder, {}, {}, "broken", error=first_line(err))
    status, last_run, progress, pid = run_status(folder, queued or {}, dropped)
    done_dir = folder / "done"
    steps_done = sorted(p.stem for p in done_dir.glob("*.json")) if done_dir.exists() else []
    job = ""
    if status in ("queued", "running") and (info := slurm.job_of(folder.parent.parent, folder.name)) is not None:
        job = f"{'Slurm' if info['cluster'] == 'slurm' else 'submitit-local'} job {info['job_id']}"
    return RunSummary(
        folder.name, folder, spec, metrics, status, last_run, progress, steps_done, pid, mtime=mtime, job=job
    )


def _signature(folder: Path) -> tuple:
    out = []
    for name in ("spec.json", "events.jsonl", "metrics.json"):
        try:
            st = (folder / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class Scanner:
    """Scans a workspace again and again, re-reading only the runs whose files changed and the runs
    that are queued or running (a killed job changes no file, only its lock): a few stat calls per
    idle run, so hundreds of runs cost milliseconds."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.known: dict[str, tuple[tuple, RunSummary]] = {}

    def scan(self) -> list[RunSummary]:
        """Every run folder, newest first. Raises RunFolderError where WORKSPACE/runs is a link or a
        file (jobs.run.workspace), OSError where the workspace cannot be read."""
        runs = workspace_folder(self.workspace, RUNS)
        queued, dropped = queued_runs(self.workspace), slurm.dropped(self.workspace)
        seen: dict[str, tuple[tuple, RunSummary]] = {}
        for spec_file in runs.glob("*/spec.json"):
            folder = spec_file.parent
            if not is_name(folder.name):  # not a folder factrecall made: not a run of this workspace
                continue
            sig = _signature(folder)
            old = self.known.get(folder.name)
            if (
                old is not None
                and old[0] == sig
                and old[1].status not in ("running", "queued")
                and folder.name not in queued
                and folder.name not in dropped
            ):
                seen[folder.name] = old
            else:
                seen[folder.name] = (sig, read_run(folder, queued, dropped))
        self.known = seen
        return sorted((run for _, run in seen.values()), key=lambda r: (-r.mtime, r.name))


def scan(workspace: Path) -> list[RunSummary]:
    """Every run folder under `workspace/runs`, newest first."""
    return Scanner(workspace).scan()


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def progress_text(run: RunSummary, width: int = 8) -> str:
    """`████░░░░ 52% train-mix 5/9 · ETA 3m12s`, the Jobs table's progress cell (rich markup; the
    event's words escaped, its numbers taken only where they are numbers)."""
    steps = run.steps
    if run.status == "done":
        return "[green]✓[/] all steps done"
    p = run.progress
    if run.status != "running" or not p:
        k = sum(s in run.steps_done for s in steps)
        return f"[dim]{k}/{len(steps)} steps done[/]" if k else ""
    done, total = _number(p.get("done")) or 0.0, _number(p.get("total")) or 1.0  # data has total None
    frac = min(max(done / max(total, 1.0), 0.0), 1.0)
    filled = int(round(frac * width))
    step = p.get("step", "")
    where = f"{steps.index(step) + 1}/{len(steps)}" if step in steps else ""
    eta = _number(p.get("eta_s"))
    left = f" · ETA {duration(eta)}" if eta is not None and abs(eta) < 1e9 else ""
    return f"[yellow]{'█' * filled}[/][dim]{'░' * (width - filled)}[/] {frac:4.0%} {markup(step)} {where}{left}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
