"""The workspace queue: jobs that run in the background, one at a time on a CPU-only machine and one
per GPU otherwise (a run that a shell's `run` or `reproduce` works on takes a slot too), and outlive
whatever started them (the TUI, a shell, an ssh session).

    WORKSPACE/queue/<ns>-<run>.json          a queued job: {"run", "device", "dump", "reuse", "time"}
    WORKSPACE/queue/started/<ns>-<run>.json  a job the worker has started, with the job's pid
    WORKSPACE/queue/cancel/<run>.json        a request to the worker to interrupt its job for <run>
    WORKSPACE/queue/worker.lock              held by the one worker process; its pid inside
    WORKSPACE/queue/worker.log               what the worker did, one line per job

`submit` writes an entry and starts a worker (a detached `factrecall-jobs worker`); a worker that
finds another one holding the lock exits at once, and the one worker leaves when the queue is empty.
Each job is `factrecall-jobs resume RUN` in its own process and session: the same code path as the
CLI, its console output in RUN/job.out. Here: how the queue's runs stand, submitting, cancelling and
archiving; the worker is `jobs.launch.worker`, the folders' entries `jobs.launch.queue_entries`.
Nothing here imports torch (the worker's `visible_gpus` does, when the worker calls it), so the TUI can
import this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobs.errors import FactrecallError, RunFolderError
from jobs.launch import slurm
from jobs.launch.procs import alive, is_job
from jobs.launch.queue_entries import STUDY, _entries, _read, _run_of, queue_dir, study_folder, study_key
from jobs.launch.worker import run_worker as run_worker  # where `factrecall-jobs worker` finds it
from jobs.run.events import Event, latest
from jobs.run.files import atomic_write_json, open_append, read_bytes, read_record, take_lock
from jobs.run.folder import RunFolder, live_pid
from jobs.run.spec import ExperimentSpec, check_run_name
from jobs.run.stop import request_stop
from jobs.run.workspace import ARCHIVE, QUEUE, RUNS, run_path
from jobs.run.workspace import folder as workspace_folder
from jobs.words import ENDED, RunStatus


def queued_runs(workspace: Path) -> dict[str, str]:
    """Runs waiting (`queued`) or being started (`starting`, before the job holds its folder), in
    queue order; then runs submitted to Slurm (`jobs.launch.slurm.active`: `starting` once the job runs
    there, where no lock of this machine's can show it)."""
    out = {_run_of(e): "queued" for e in _entries(queue_dir(workspace))}
    for e in _entries(queue_dir(workspace) / "started"):
        info = _read(e)
        # Claimed by the worker and not started yet (no pid), or started: either way, on its way.
        if ("pid" not in info and alive(_worker_pid(workspace))) or is_job(info.get("pid")):
            out.setdefault(_run_of(e), "starting")
    for name, state in slurm.active(workspace).items():
        out.setdefault(name, state)
    return out


def run_status(
    folder: Path, queued: dict[str, str], dropped: dict[str, str] | None = None
) -> tuple[RunStatus, Event, Event, int | None]:
    """How a run stands, from its folder, the queue (`queued_runs`) and the scheduler's dropped jobs
    (`slurm.dropped`): (status, its last job's `run` event, the running job's latest progress, the pid
    holding the folder). Reads only.

    - `running`: a live process holds the run (its pid in run.lock), or the queue is starting it;
    - `queued`: waiting in the queue, or held by the scheduler;
    - `done`, `failed`, `interrupted`: how its last job ended, as that job said in events.jsonl, or
      `failed` where the scheduler dropped the job before the run could say so;
    - `stopped`: its last job said it was running but no process holds it now (killed without a word,
      or the machine went down): `resume` continues it;
    - `new`: a spec and nothing else yet."""
    last_run, progress = latest(folder)
    pid = live_pid(folder)
    status: RunStatus
    if pid is not None or queued.get(folder.name) == "starting":
        status = "running"
    elif folder.name in queued:
        status = "queued"
    elif dropped and folder.name in dropped:
        status, last_run = "failed", {**last_run, "status": "failed", "error": dropped[folder.name]}
    elif last_run.get("status") in ENDED:
        status = last_run["status"]
    elif last_run.get("status") == "running":
        status = "stopped"
    else:
        status = "new"
    return status, last_run, progress if status == "running" else {}, pid


def _worker_pid(workspace: Path) -> int | None:
    try:
        text = read_bytes(queue_dir(workspace) / "worker.lock", "", limit=64).decode(errors="replace").strip()
    except FactrecallError:
        return None
    return int(text) if text.isdigit() else None


def job_table(workspace: Path) -> list[dict]:
    """The runs queued, starting or running in the workspace (for `factrecall-jobs status`): each
    with its executor, pid or scheduler job id, how far it is, and where its console output goes."""
    rows = []
    on_scheduler = slurm.active(workspace)
    for name, state in queued_runs(workspace).items():
        if name.startswith(STUDY):  # a whole study (`reproduce`) run by the queue
            pid = next(
                (
                    info.get("pid")
                    for e in _entries(queue_dir(workspace) / "started")
                    if _run_of(e) == name
                    for info in [_read(e)]
                    if is_job(info.get("pid"))
                ),
                None,
            )
            rows.append(
                {
                    "run": name,
                    "status": "running" if pid else state,
                    "executor": "local",
                    "job": None,
                    "pid": pid,
                    "log": str(study_folder(workspace, name.removeprefix(STUDY)) / "job.out"),
                }
            )
            continue
        folder = run_path(workspace, name)
        job = slurm.job_of(workspace, name) if name in on_scheduler else None
        if job is not None:
            rows.append(
                {
                    "run": name,
                    "status": "running" if state == "starting" else "queued",
                    "executor": slurm.executor_name(job),
                    "job": job["job_id"],
                    "pid": None,
                    "log": str(folder / "job.out"),
                }
            )
            continue
        pid = live_pid(folder) if state == "starting" else None
        rows.append(
            {
                "run": name,
                "status": "running" if pid else state,
                "executor": "local",
                "job": None,
                "pid": pid if pid and pid > 0 else None,
                "log": str(folder / "job.out"),
            }
        )
    listed = {r["run"] for r in rows}
    runs = workspace_folder(workspace, RUNS)
    for folder in sorted(runs.glob("*")) if runs.is_dir() else []:
        if folder.name not in listed and not folder.is_symlink() and (pid := live_pid(folder)) is not None:
            rows.append(
                {
                    "run": folder.name,
                    "status": "running",
                    "executor": "shell",
                    "job": None,
                    "pid": pid if pid > 0 else None,
                    "log": None,
                }
            )
    for row in rows:
        if row["run"].startswith(STUDY):
            row["progress"] = study_progress_text(study_folder(workspace, row["run"].removeprefix(STUDY)))
        else:
            row["progress"] = progress_of(run_path(workspace, row["run"])) if row["status"] == "running" else ""
    return rows


def queued_studies(workspace: Path) -> dict[str, str]:
    """The studies the queue holds: name -> `queued`, or `running` while its process lives."""
    qdir = queue_dir(workspace)
    out = {_run_of(e).removeprefix(STUDY): "queued" for e in _entries(qdir) if _run_of(e).startswith(STUDY)}
    for e in _entries(qdir / "started"):
        if _run_of(e).startswith(STUDY) and is_job(_read(e).get("pid")):
            out[_run_of(e).removeprefix(STUDY)] = "running"
    return out


def study_progress_text(folder: Path) -> str:
    """How far a study is, in words, from its progress.json: `runs 2/6 (reproduce-cpu-s2)`, `probes
    40/270`, `interventions 1,200/7,600`, `report`, `done`; "" before it has begun."""
    p = read_record(folder / "progress.json")
    try:
        if p["step"] == "runs":
            return f"runs {p['runs_done']}/{p['runs_total']} ({p['current']})"
        if p["step"] == "probes":
            return f"probes {p['probes_done']}/{p['probes_total']}" if "probes_total" in p else "probes"
        if p["step"] == "interventions":  # the decodes of the run being patched
            return f"interventions {p['patched']:,}/{p['patch_total']:,}" if "patch_total" in p else "interventions"
        if p["step"] == "sites":  # the report's sites: dumps, probe sweeps and the causal test
            return f"sites {p['sites_done']}/{p['sites_total']}" if "sites_total" in p else "sites"
        return str(p["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def progress_of(folder: Path) -> str:
    """How far the running job is, in words: `train-mix 1,200/3,000`, `dump 36,000/72,000`, or the
    step it has just started (`data`)."""
    run, last = latest(folder)
    if run.get("status") != "running" or not last:
        return ""
    what = f"{last.get('step', '')} {last.get('phase', '')}".strip()
    done, total = last.get("done"), last.get("total")
    return f"{what} {done:,}/{total:,}" if isinstance(done, int) and isinstance(total, int) else what


# -- submitting -------------------------------------------------------------------------------------
def prepare(workspace: Path, spec: ExperimentSpec, name: str) -> Path:
    """The run folder for `spec` under `name`, made now (spec.json) so that the run is listed while it
    waits; refused as `run` would refuse it (another experiment there, or running now)."""
    if check_run_name(name) in queued_runs(workspace):  # (also: the queue's folders are the workspace's own)
        raise FactrecallError(f"run {name} is queued already; cancel it first to change it")
    path = run_path(workspace, name, make=True)
    with RunFolder.create_or_resume(path, spec):
        pass
    return path


def submit(
    workspace: Path, name: str, device: str | None = None, dump: bool = True, reuse: bool = True, start: bool = True
) -> Path:
    """Queue `factrecall-jobs resume NAME` (the run folder exists) and make sure a worker runs."""
    qdir = queue_dir(workspace, make=True)
    if check_run_name(name) in queued_runs(workspace):
        raise FactrecallError(f"run {name} is queued already")
    entry = qdir / f"{time.time_ns()}-{name}.json"
    atomic_write_json(entry, {"run": name, "device": device, "dump": dump, "reuse": reuse, "time": time.time()})
    (slurm.slurm_dir(workspace) / f"{name}.json").unlink(missing_ok=True)  # this machine's to run now
    if start:
        start_worker(workspace)
    return entry


def submit_study(workspace: Path, name: str, argv: list[str], start: bool = True) -> Path:
    """Queue a whole study: `factrecall-jobs reproduce ARGV` (its options, `--name NAME` among them), run
    by the worker like a run and taking one slot; its console goes to WORKSPACE/reproduce/NAME/job.out.
    `cancel study:NAME` stops it (the run it is training keeps its work) or takes it off the queue."""
    key = study_key(check_run_name(name))
    if key in queued_runs(workspace):
        raise FactrecallError(f"study {name} is queued or running already; cancel it first (c on the Report tab)")
    entry = queue_dir(workspace, make=True) / f"{time.time_ns()}-{key}.json"
    atomic_write_json(entry, {"study": name, "argv": list(argv), "time": time.time()})
    if start:
        start_worker(workspace)
    return entry


def start_worker(workspace: Path) -> None:
    """A detached worker process (it exits at once if one is running already)."""
    qdir = queue_dir(workspace, make=True)
    with open_append(qdir / "worker.log") as log:
        subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "--workspace", str(workspace.resolve()), "worker"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def cancel(workspace: Path, name: str) -> str:
    """Take a queued run off the queue, or interrupt a running one (SIGINT: the job records itself as
    interrupted and keeps what it finished). Returns what was done, in words."""
    if (said := slurm.cancel(workspace, name)) is not None:
        return said
    qdir = queue_dir(workspace)
    for entry in _entries(qdir):
        if _run_of(entry) == name:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                return f"{name}: taken off the queue"
    owned = [_read(e) for e in _entries(qdir / "started") if _run_of(e) == name]
    if any("pid" not in info or is_job(info["pid"]) for info in owned) and alive(_worker_pid(workspace)):
        # The worker owns it (starting, or running): it interrupts its own child, with no pid race.
        atomic_write_json(
            workspace_folder(workspace, QUEUE, "cancel", make=True) / f"{name}.json", {"run": name, "time": time.time()}
        )
        return f"{name}: stopping; what it finished is kept, `resume` continues it"
    pid = live_pid(run_path(workspace, name))
    if pid and pid > 0 and is_job(pid):
        request_stop(run_path(workspace, name), pid)
        return f"{name}: stopping (pid {pid}); what it finished is kept, `resume` continues it"
    return f"{name}: not running"


def remove_run(workspace: Path, name: str, delete: bool = False) -> str:
    """Archive a run: move its folder to WORKSPACE/archive/NAME (the app and `queue` no longer list it;
    moving it back to runs/ restores it), or delete it for good. Refused while it is queued or running:
    cancel it first. Crash-safe: the folder leaves runs/ in one rename, with its lock held so that no
    job can start in it meanwhile; a delete renames it to archive/.deleting-NAME-TIME first and removes
    that afterwards (what a crash left there is removed by the next archive or delete), so runs/ never
    holds half a run. Returns what was done, in words."""
    runs = workspace_folder(workspace, RUNS)
    folder = runs / name
    if Path(name).name != name or name in ("", ".", "..") or folder.is_symlink() or not folder.is_dir():
        raise RunFolderError(f"no run {name!r} in {runs}: `factrecall-jobs queue` lists them")
    status, *_ = run_status(folder, queued_runs(workspace))
    if status in ("queued", "running"):
        raise RunFolderError(
            f"run {name} is {status}: cancel it first (`factrecall-jobs cancel {name}`, or c in the app)"
        )
    archive = workspace_folder(workspace, ARCHIVE)
    target = archive / (f".deleting-{name}-{time.time_ns()}" if delete else name)
    if target.exists() or target.is_symlink():
        raise RunFolderError(f"{target} exists already (archived before?): rename or remove it, then try again")
    workspace_folder(workspace, ARCHIVE, make=True)
    for left in archive.glob(".deleting-*"):  # a delete a crash interrupted
        shutil.rmtree(left, ignore_errors=True)
    fd = take_lock(folder / "run.lock", f"run {name}")  # held: no job can start in it while it moves
    try:
        os.rename(folder, target)
    finally:
        os.close(fd)
    if delete:
        shutil.rmtree(target)
        return f"{name}: deleted"
    return f"{name}: archived to {target} (move it back to {runs}/ to restore it)"
