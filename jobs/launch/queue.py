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
CLI, its console output in RUN/job.out. Nothing here imports torch but `visible_gpus`, which only the
worker calls, so the TUI can import this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from jobs.errors import FactrecallError, RunFolderError
from jobs.launch import slurm
from jobs.launch.procs import alive, is_job, resume_command, take_request
from jobs.run.events import Event, latest, record_end
from jobs.run.files import atomic_write_json, hold_lock, open_append, read_bytes, read_record, take_lock
from jobs.run.folder import RunFolder, live_pid, request_stop
from jobs.run.spec import ExperimentSpec, check_run_name
from jobs.run.workspace import ARCHIVE, QUEUE, RUNS, run_path, study_path
from jobs.run.workspace import folder as workspace_folder
from jobs.words import ENDED, RunStatus

POLL_S = 0.5


def queue_dir(workspace: Path, make: bool = False) -> Path:
    return workspace_folder(workspace, QUEUE, make=make)


def _valid_key(key: str) -> bool:
    """A run's name, or `study:NAME`: what factrecall names a queue entry after."""
    try:
        check_run_name(key.removeprefix(STUDY))
    except FactrecallError:
        return False
    return True


def _entries(folder: Path, stamped: bool = True) -> list[Path]:
    """The entries in a queue folder, oldest first: regular files named `<ns>-<key>.json` (`stamped`)
    or `<key>.json`, `key` a name factrecall could have written. Anything else there (a crafted name, a
    link, a FIFO) is not an entry: it never reaches a command line, a table or a terminal."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    found = []
    for entry in folder.glob("*.json"):
        stamp, _, key = entry.stem.partition("-") if stamped else ("0", "", entry.stem)
        if stamp.isdigit() and _valid_key(key) and stat.S_ISREG(entry.lstat().st_mode):
            found.append(entry)
    return sorted(found)


def _run_of(entry: Path) -> str:
    return entry.stem.split("-", 1)[1]


STUDY = "study:"  # a queued study's key, beside the runs' names (a run name has no colon)


def study_key(name: str) -> str:
    return STUDY + name


def study_folder(workspace: Path, name: str, make: bool = False) -> Path:
    return study_path(workspace, name, make=make)


_read = read_record


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


# -- the worker -------------------------------------------------------------------------------------
def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _spec_device(folder: Path) -> str | None:
    """The device the run was made for (spec.json's `device`), so a resume keeps it."""
    return _read(folder / "spec.json").get("device")


def default_slots(gpus: int) -> int:
    """Jobs at once: FACTRECALL_SLOTS, else one per visible GPU, else one."""
    if os.environ.get("FACTRECALL_SLOTS", "").isdigit():
        return max(1, int(os.environ["FACTRECALL_SLOTS"]))
    return max(1, gpus)


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


class Worker:
    def __init__(self, workspace: Path, slots: int):
        self.workspace, self.slots = workspace, slots
        self.gpus = 0
        self.children: dict[str, tuple[subprocess.Popen, Path, int]] = {}

    def _free_slot(self) -> int:
        used = {slot for _, _, slot in self.children.values()}
        return min(set(range(self.slots)) - used)

    def running_elsewhere(self) -> list[str]:
        """Runs of the workspace that a process other than this worker's children holds (a `run` or
        `reproduce` typed in a shell, a `resume` of a cancelled job): they take a slot as much as ours."""
        runs = workspace_folder(self.workspace, RUNS)
        ours = {proc.pid for proc, _, _ in self.children.values()}  # a study of ours holds its runs itself
        return (
            [
                folder.name
                for folder in sorted(runs.iterdir())
                if folder.name not in self.children
                and not folder.is_symlink()
                and (pid := live_pid(folder)) is not None
                and pid not in ours
            ]
            if runs.is_dir()
            else []
        )

    def _cancelled(self, name: str) -> bool:
        return take_request(queue_dir(self.workspace) / "cancel" / f"{name}.json")

    def handle_cancels(self) -> None:
        for flag in _entries(queue_dir(self.workspace) / "cancel", stamped=False):
            name = flag.stem
            if name in self.children:
                folder = (
                    study_folder(self.workspace, name.removeprefix(STUDY))
                    if name.startswith(STUDY)
                    else run_path(self.workspace, name)
                )
                request_stop(folder, self.children[name][0].pid)
                _log(f"{name}: interrupted on request")
            flag.unlink(missing_ok=True)

    def launch(self, entry: Path) -> None:
        started = workspace_folder(self.workspace, QUEUE, "started", make=True) / entry.name
        info = _read(entry)
        try:
            os.rename(entry, started)  # the claim: from here a cancel goes through the worker
        except FileNotFoundError:
            return
        name = info.get("run") or _run_of(entry)
        try:
            self._start(name, info, started)
        except Exception as err:  # noqa: BLE001 - one bad entry must not stop the queue
            _log(f"{name}: not started: {err}")
            started.unlink(missing_ok=True)

    def _start(self, name: str, info: dict, started: Path) -> None:
        if name.startswith(STUDY):
            self._start_study(name, info, started)
            return
        folder = run_path(self.workspace, name)
        if self._cancelled(name):
            _log(f"{name}: cancelled before it started")
            started.unlink()
            return
        if live_pid(folder) is not None:
            _log(f"{name}: already running elsewhere; dropped from the queue")
            started.unlink()
            return
        slot = self._free_slot()
        device = info.get("device") or _spec_device(folder)
        if device in ("auto", "cuda") and self.gpus:
            device = f"cuda:{slot % self.gpus}"  # one job per GPU
        cmd = resume_command(self.workspace, name, device, info.get("dump", True), info.get("reuse", True))
        self._spawn(
            name, cmd, folder / "job.out", info, started, slot, f" on {device}" if device and device != "auto" else ""
        )

    def _start_study(self, key: str, info: dict, started: Path) -> None:
        if self._cancelled(key):
            _log(f"{key}: cancelled before it started")
            started.unlink()
            return
        folder = study_folder(self.workspace, key.removeprefix(STUDY), make=True)
        cmd = [sys.executable, "-m", "jobs.cli", "--workspace", str(self.workspace), "reproduce", *info.get("argv", [])]
        self._spawn(key, cmd, folder / "job.out", info, started, self._free_slot())

    def _spawn(
        self, key: str, cmd: list[str], console: Path, info: dict, started: Path, slot: int, where: str = ""
    ) -> None:
        """Start a job's process (its command line, then its output, appended to `console`) and record
        it as started: its pid in the claimed entry, and in this worker's children."""
        with open_append(console) as out:
            out.write(f"\n$ factrecall-jobs {' '.join(cmd[3:])}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        atomic_write_json(started, {**info, "pid": proc.pid, "started": time.time(), "slot": slot})
        self.children[key] = (proc, started, slot)
        _log(f"{key}: started pid {proc.pid}{where}")

    def reap(self) -> None:
        for name, (proc, started, _slot) in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[name]
            if code != 0 and not name.startswith(STUDY):  # a study's runs record their own ends
                self._record_end(name, code, _read(started).get("started", 0))
            started.unlink(missing_ok=True)
            _log(f"{name}: exited with code {code}")

    def _record_end(self, name: str, code: int, since: float) -> None:
        folder = run_path(self.workspace, name)
        if live_pid(folder) is not None:  # it never got the folder: another process holds it
            return
        record_end(folder, code, since, f"the job process exited with code {code}; see job.out")

    def clean_stale(self) -> None:
        """Entries and requests left by a worker that was killed (or a machine that went down)."""
        for e in _entries(queue_dir(self.workspace) / "started"):
            if not is_job(_read(e).get("pid")):
                e.unlink(missing_ok=True)
        for flag in _entries(queue_dir(self.workspace) / "cancel", stamped=False):
            flag.unlink(missing_ok=True)

    def loop(self) -> None:
        qdir = queue_dir(self.workspace)
        while True:
            self.handle_cancels()
            self.reap()
            pending = _entries(qdir)
            free = self.slots - len(self.children) - (len(self.running_elsewhere()) if pending else 0)
            for entry in pending[: max(free, 0)]:
                self.launch(entry)
            if not self.children and not _entries(qdir):
                return
            time.sleep(POLL_S)


def run_worker(workspace: Path, slots: int | None = None) -> int:
    """Run queued jobs until the queue is empty. One worker per workspace: returns 0 at once if
    another holds the lock."""
    qdir = queue_dir(workspace, make=True)
    while True:
        try:
            fd = take_lock(qdir / "worker.lock", "the workspace's queue worker")
        except RunFolderError:  # another worker runs the queue (or the lock is not a file: said by submit)
            return 0
        hold_lock(fd)
        try:
            gpus = visible_gpus()
            worker = Worker(workspace, slots or default_slots(gpus))
            worker.gpus = gpus
            worker.clean_stale()
            _log(f"worker {os.getpid()}: {worker.slots} slot(s)")
            worker.loop()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        # An entry written between the last look and the unlock would wait for the next submit.
        if not _entries(qdir):
            return 0
