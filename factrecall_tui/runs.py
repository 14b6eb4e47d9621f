"""What the TUI knows about a workspace, read from run folders' files only (spec.json,
metrics.json, events.jsonl, run.lock, the queue and the Slurm registry): no model code is imported
into the UI process, and nothing is written. A run's status is `jobs.launch.queue.run_status`'s, the
same as `factrecall-jobs status` says; `broken` where the folder cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jobs.launch import slurm
from jobs.launch.queue import queued_runs, run_status
from jobs.errors import USER_ERRORS, RunFolderError, first_line
from jobs.run.files import read_json
from jobs.run.folder import read_metrics
from jobs.words import RunStatus, steps_of
from store.names import STORE_NAME


@dataclass
class RunSummary:
    name: str
    path: Path
    spec: dict
    metrics: dict
    status: RunStatus
    last_run: dict = field(default_factory=dict)       # the last `run` event (status, error, phases)
    progress: dict = field(default_factory=dict)       # the last `progress` or `start` event of the job now running
    steps_done: list[str] = field(default_factory=list)
    pid: int | None = None
    error: str = ""                                    # why the folder could not be read (status `broken`)
    mtime: float = 0.0
    job: str = ""                                      # `slurm job 4242_1`, for a run submitted to Slurm

    @property
    def strategies(self) -> str:
        return "+".join(self.spec.get("strategies", [])) or "?"

    @property
    def model(self) -> str:
        m = self.spec.get("model", {})
        if m.get("path"):
            return Path(m["path"]).name
        return f"llama {m.get('layers', '?')}x{m.get('hidden', '?')}" if m else "?"

    @property
    def seed(self) -> str:
        return str(self.spec.get("seed", "?"))

    @property
    def people(self) -> str:
        return str(self.spec.get("data", {}).get("people", "?"))

    @property
    def has_store(self) -> bool:
        return (self.path / STORE_NAME / "zarr.json").exists()

    @property
    def steps(self) -> list[str]:
        """Every step of the run, in order (`jobs.words.steps_of`, as jobs/run/pipeline.py runs them)."""
        return steps_of(self.spec.get("strategies", []), builtin_model=not self.spec.get("model", {}).get("path"),
                        snapshots=bool(self.spec.get("train", {}).get("snapshots")))

    @property
    def title(self) -> str:
        d = self.spec.get("data", {})
        return (f"{self.name} — preset {self.spec.get('preset')}, {self.strategies}, seed {self.seed}, "
                f"{d.get('people')} people ({d.get('qa_in_fraction', 0):.0%} QA-in), {self.model}")


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
    return RunSummary(folder.name, folder, spec, metrics, status, last_run, progress, steps_done, pid, mtime=mtime,
                      job=job)


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
        queued, dropped = queued_runs(self.workspace), slurm.dropped(self.workspace)
        seen: dict[str, tuple[tuple, RunSummary]] = {}
        for spec_file in (self.workspace / "runs").glob("*/spec.json"):
            folder = spec_file.parent
            sig = _signature(folder)
            old = self.known.get(folder.name)
            if (old is not None and old[0] == sig and old[1].status not in ("running", "queued")
                    and folder.name not in queued and folder.name not in dropped):
                seen[folder.name] = old
            else:
                seen[folder.name] = (sig, read_run(folder, queued, dropped))
        self.known = seen
        return sorted((run for _, run in seen.values()), key=lambda r: (-r.mtime, r.name))


def scan(workspace: Path) -> list[RunSummary]:
    """Every run folder under `workspace/runs`, newest first."""
    return Scanner(workspace).scan()


def progress_text(run: RunSummary, width: int = 8) -> str:
    """`████░░░░ 52% train-mix 5/9 · ETA 3m12s`, the Jobs table's progress cell (rich markup)."""
    steps = run.steps
    if run.status == "done":
        return "[green]✓[/] all steps done"
    p = run.progress
    if run.status != "running" or not p:
        k = sum(s in run.steps_done for s in steps)
        return f"[dim]{k}/{len(steps)} steps done[/]" if k else ""
    frac = (p.get("done") or 0) / max(p.get("total") or 1, 1)  # a step without a count (data) has total None
    filled = int(round(frac * width))
    step = p.get("step", "")
    where = f"{steps.index(step) + 1}/{len(steps)}" if step in steps else ""
    eta = p.get("eta_s")
    left = f" · ETA {duration(eta)}" if eta is not None else ""
    return f"[yellow]{'█' * filled}[/][dim]{'░' * (width - filled)}[/] {frac:4.0%} {step} {where}{left}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
