"""`submit --executor slurm`: runs go to a Slurm cluster through submitit, all seeds x strategies of
one `submit` as one array job, and stay visible where local jobs are (`factrecall-jobs status`, the
TUI), since each job writes its own run folder on the shared filesystem.

    WORKSPACE/queue/slurm/<run>.json         the run's job: {"run", "job_id", "cluster", "folder", "log", ...}
    WORKSPACE/queue/slurm/cancel/<run>.json  a request to the run's task to interrupt its job
    WORKSPACE/queue/slurm/submitit/          submitit's own files: the sbatch script, its logs, its call

Each array task runs `ResumeJob`: `factrecall-jobs resume RUN` in a child process, its console output
in RUN/job.out as with the local executor. Before a time limit or a preemption, Slurm signals the job
(submitit's USR2, which Slurm sends to every process of the step: the child is started with USR2
ignored, so that only the task hears it), `ResumeJob.checkpoint` interrupts the child (which saves a
checkpoint, as on Ctrl-C) and submitit requeues the task, whose `resume` continues the run. The child
takes Slurm's SIGTERM (scancel, a time limit reached, preemption) as Ctrl-C too. `cancel RUN` of a job
Slurm runs writes a request the task polls for (the compute node sees the workspace; a signal from the
login node could not reach it); the task interrupts its child on seeing it, and ends without an error.
A job Slurm has not started is scancelled.

The scheduler's word on a job comes from `squeue` (the controller: pending, held after a requeue,
running), then `sacct` once the controller has forgotten it; a cluster without accounting makes a job
squeue no longer lists `GONE`, so a job Slurm dropped is not shown queued for ever.

With FACTRECALL_SUBMITIT_CLUSTER=local the same submission runs through submitit's LocalExecutor on
this machine (what the tests do); submitit itself is only imported when a job is submitted or asked
about, so the TUI stays light. What a job asks Slurm for, and its check against the cluster's
partitions, is `jobs.launch.slurm_options`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from jobs.errors import FactrecallError
from jobs.launch.procs import TERM_STOPS, alive, resume_command, take_request
from jobs.launch.slurm_options import SlurmOptions, _slurm, fit_to_cluster
from jobs.run.events import INTERRUPTED_CODES, latest, record_end
from jobs.run.files import atomic_write_json, open_append, read_record
from jobs.run.spec import check_run_name
from jobs.run.stop import request_stop
from jobs.run.workspace import QUEUE, run_path
from jobs.run.workspace import folder as workspace_folder

# sacct's states of a job that will not run (again)
GONE = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "FINISHED",
    "GONE",
    "INTERRUPTED",
}
STATE_TTL_S = 30.0  # how long a scheduler answer is reused (squeue and sacct are not for polling every second)
_states: dict[str, tuple[float, str]] = {}
REQUEUES = 20  # time limits a run may meet, each saved and requeued, before submitit gives up on it


def slurm_dir(workspace: Path, make: bool = False) -> Path:
    return workspace_folder(workspace, QUEUE, "slurm", make=make)


def cluster() -> str:
    name = os.environ.get("FACTRECALL_SUBMITIT_CLUSTER", "slurm")
    if name not in ("slurm", "local"):
        raise FactrecallError(f"FACTRECALL_SUBMITIT_CLUSTER={name!r}: use slurm (default) or local")
    return name


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise FactrecallError("--executor slurm needs submitit: pip install 'factrecall[slurm]'") from None
    return submitit


class ResumeJob:
    """What one array task runs (submitit pickles this call into its own folder: its arguments are a
    run name and flags, nothing else). Checkpointable as submitit asks (a `checkpoint` method): requeued
    on a time limit or a preemption."""

    def __init__(self, workspace: str, run: str, device: str | None = None, dump: bool = True, reuse: bool = True):
        self.workspace, self.run, self.device, self.dump, self.reuse = workspace, run, device, dump, reuse
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proc=None)

    def __call__(self) -> str:
        workspace = Path(self.workspace)
        folder = run_path(workspace, self.run)
        cmd = resume_command(workspace, self.run, self.device, self.dump, self.reuse)
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())
        started = time.time()
        if _take_cancel(workspace, self.run):  # cancelled while Slurm was starting the task
            record_end(folder, 130, started, f"cancelled before it started ({job})")
            return "interrupted"
        with open_append(folder / "job.out") as out:
            out.write(
                f"\n$ factrecall-jobs {' '.join(cmd[3:])}   # submitit job {job} on {os.uname().nodename}\n".encode()
            )
            out.flush()
            # Slurm's warning (USR2) goes to every process of the step: the child ignores it (an ignored
            # signal stays ignored across exec), so that it lives until `checkpoint` asks it to save.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_ignore_usr2,
                env={**os.environ, "PYTHONUNBUFFERED": "1", TERM_STOPS: "1"},
            )
        while self._proc.poll() is None:
            if _take_cancel(workspace, self.run):
                request_stop(folder, self._proc.pid)
            time.sleep(0.5)
        code = self._proc.returncode
        if code in INTERRUPTED_CODES:  # stopped (a cancel, scancel, a time limit): it kept what it finished
            record_end(folder, code, started, f"the job process was stopped (exit code {code}); see job.out")
            return "interrupted"
        if code != 0:
            record_end(folder, code, started, f"the job process exited with code {code}; see job.out")
            raise FactrecallError(
                f"factrecall-jobs resume {self.run} exited with code {code}; see {folder / 'job.out'}"
            )
        return "done"

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on Slurm's warning signal: stop the child as Ctrl-C would (it keeps a
        checkpoint), then requeue the same call, which resumes the run."""
        submitit = _import_submitit()
        if self._proc is not None and self._proc.poll() is None:
            request_stop(run_path(Path(self.workspace), self.run), self._proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=90)
        return submitit.helpers.DelayedSubmission(
            ResumeJob(self.workspace, self.run, self.device, self.dump, self.reuse)
        )


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _cancel_flag(workspace: Path, run: str) -> Path:
    return workspace_folder(workspace, QUEUE, "slurm", "cancel") / f"{run}.json"


def _take_cancel(workspace: Path, run: str) -> bool:
    """Whether a `cancel` asked this run's task to stop (the request is consumed)."""
    return take_request(_cancel_flag(workspace, run))


def make_executor(workspace: Path, options: SlurmOptions):
    """submitit's executor for `options` (checked against the cluster: `fit_to_cluster`, whose words
    it returns beside it), made before any run folder is, so that a machine with no Slurm, or a bad
    option, is refused with nothing written."""
    submitit = _import_submitit()
    options.parameters()  # each option's own form first, then against the cluster
    notes = fit_to_cluster(options) if cluster() == "slurm" else []
    params = options.parameters()
    try:
        executor = submitit.AutoExecutor(
            folder=workspace_folder(workspace.resolve(), QUEUE, "slurm", "submitit") / "%j",
            cluster=cluster(),
            slurm_max_num_timeout=REQUEUES,
            local_max_num_timeout=REQUEUES,
        )
        executor.update_parameters(**params)
    except Exception as err:  # noqa: BLE001 - submitit's RuntimeError/ValueError say it in a line
        raise FactrecallError(
            f"cannot submit to Slurm from here: {_last_line(err)} (run on a login node of the "
            "cluster, with sbatch and srun on PATH)"
        ) from None
    return executor, notes


def _last_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


def submit(
    executor, workspace: Path, names: list[str], device: str | None = None, dump: bool = True, reuse: bool = True
) -> list[dict]:
    """One array job through `executor` (from `make_executor`), a task per run (their folders made
    already); returns the registry entries."""
    workspace = workspace.resolve()
    where = cluster()
    for name in names:  # a request left by a cancel whose job ended first must not stop the new one
        _cancel_flag(workspace, name).unlink(missing_ok=True)
    own = slurm_dir(workspace) / "submitit"
    before = set(own.iterdir()) if own.is_dir() else set()
    try:
        # submitit prints sbatch's complaint to sys.stderr before raising it: said once, below, instead
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            handles = [executor.submit(ResumeJob(str(workspace), name, device, dump, reuse)) for name in names]
    except Exception as err:  # noqa: BLE001 - sbatch refusing: submitit raises its own types
        for left in (set(own.iterdir()) if own.is_dir() else set()) - before:  # its pickle and script
            if left.is_file():
                left.unlink(missing_ok=True)
        raise FactrecallError(f"the Slurm submission failed: {_last_line(err)}") from None
    entries = []
    for name, job in zip(names, handles):
        entry = {
            "run": name,
            "job_id": str(job.job_id),
            "cluster": where,
            "folder": str(job.paths.folder),
            "log": str(job.paths.stdout),
            "submitted": time.time(),
            "options": {
                k: v for k, v in executor._executor.parameters.items() if isinstance(v, (str, int, float, list))
            },
        }
        atomic_write_json(slurm_dir(workspace, make=True) / f"{name}.json", entry)
        entries.append(entry)
    return entries


def _entry(path: Path) -> dict | None:
    """A registry entry as submit wrote it, or None: a crafted one (a run name factrecall would not
    write, a job id that is not Slurm's) is not an entry, so it never reaches scancel or a terminal."""
    info = read_record(path)
    try:
        ok = (
            check_run_name(str(info.get("run"))) == path.stem
            and re.fullmatch(r"\d+(_\d+)?", str(info.get("job_id")))
            and info.get("cluster") in ("slurm", "local")
            and isinstance(info.get("submitted"), (int, float))
        )
    except FactrecallError:
        ok = False
    return info if ok else None


def entries(workspace: Path) -> list[dict]:
    folder = slurm_dir(workspace)
    found = (_entry(path) for path in sorted(folder.glob("*.json"))) if folder.is_dir() else ()
    return [info for info in found if info is not None]


def _slurm_state(job_id: str) -> str:
    """Slurm's word for a job: squeue's while the controller holds it (PENDING, also during the hold
    after a requeue, RUNNING, COMPLETING...), then sacct's; `GONE` when neither knows it (a cluster
    without accounting forgets an ended job), `UNKNOWN` when the controller does not answer."""
    queue = _slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T")
    if queue is None or (queue.returncode != 0 and "Invalid job id" not in queue.stderr):
        return "UNKNOWN"
    listed = dict(line.split("|", 1) for line in queue.stdout.split() if "|" in line)
    if job_id in listed:
        return listed[job_id]
    if len(listed) == 1 and queue.returncode == 0:  # an array job not split into its tasks yet: 12_[0-3]
        return next(iter(listed.values()))
    acct = _slurm("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id)
    for line in reversed(acct.stdout.splitlines() if acct is not None and acct.returncode == 0 else []):
        fields = line.split("|")  # the job's latest record (a requeued job has had several)
        if fields[0] == job_id and len(fields) > 1 and fields[1].strip():
            return fields[1].split()[0]  # CANCELLED by 0 -> CANCELLED
    return "GONE"  # the controller no longer lists it, and accounting (if any) does not know it: ended


def scheduler_state(info: dict, fresh: bool = False) -> str:
    """The scheduler's word for the job: PENDING, RUNNING, COMPLETED, ... (`_slurm_state` on Slurm;
    the controller process and submitit's result file with the local executor), cached a little
    while (an ended job's answer for good); `fresh` asks again."""
    key = f"{info['cluster']}:{info['job_id']}"
    cached = _states.get(key)
    if cached and not fresh and (cached[1] in GONE or time.monotonic() - cached[0] < STATE_TTL_S):
        return cached[1]
    if info["cluster"] == "local":
        pid = int(info["job_id"]) if info["job_id"].isdigit() else None
        if alive(pid):
            state = "RUNNING"
        else:
            state = "FINISHED" if any(Path(info["folder"]).glob("*_result.pkl")) else "GONE"
    else:
        state = _slurm_state(info["job_id"])
    _states[key] = (time.monotonic(), state)
    return state


def states(workspace: Path) -> dict[str, tuple[str, str]]:
    """Every run submitted to the scheduler whose job has not ended: (state, why), the state
    `queued` (the scheduler holds it: waiting, or held after a requeue), `starting` (the scheduler
    runs the job; the run folder says how far it is) or `gone` (the scheduler dropped the job before
    the run could say it ended: why names the job, its state and its log). A run that says it was
    interrupted has ended only once the scheduler is done with its job too (a time limit's requeue
    interrupts it, then runs it again). Only reads: what `status` and the app ask every second
    writes nothing."""
    out = {}
    for info in entries(workspace):
        event, _ = latest(run_path(workspace, info["run"]))
        last = event.get("status") if event.get("time", 0) >= info["submitted"] else None
        if last in ("done", "failed"):
            continue
        state = scheduler_state(info)
        if state in GONE:
            if last is None or last == "running":
                out[info["run"]] = (
                    "gone",
                    f"{info['cluster']} job {info['job_id']} ended as {state}; see {info['log']}",
                )
            continue
        # Slurm runs it: running (progress from the run folder), unless it was just interrupted for a
        # requeue; PENDING (waiting, or held after a requeue) and the rest: queued.
        out[info["run"]] = ("starting" if state == "RUNNING" and last != "interrupted" else "queued", "")
    return out


def active(workspace: Path) -> dict[str, str]:
    """Runs on the scheduler that have not ended: `queued` or `starting` (see `states`)."""
    return {run: state for run, (state, _) in states(workspace).items() if state != "gone"}


def dropped(workspace: Path) -> dict[str, str]:
    """Runs whose scheduler job ended without the run saying so (killed for memory or time, a node
    lost, failed before it began), each with why: they are failed, though their folder cannot say it."""
    return {run: why for run, (state, why) in states(workspace).items() if state == "gone"}


def executor_name(info: dict) -> str:
    """How `status` names the executor of a registry entry: slurm, or submitit-local."""
    return "slurm" if info["cluster"] == "slurm" else "submitit-local"


def job_of(workspace: Path, run: str) -> dict | None:
    return _entry(slurm_dir(workspace) / f"{run}.json")


def cancel(workspace: Path, run: str) -> str | None:
    """Stop a run submitted to the scheduler: a job the scheduler runs is asked (through the workspace)
    to interrupt its run, which keeps what it finished and ends the job without an error; a job not
    running (pending, or held after a requeue) is scancelled. None if `run` is not one of those."""
    info = job_of(workspace, run)
    if info is None or run not in active(workspace):
        return None
    where = f"{info['cluster']} job {info['job_id']}"
    state = scheduler_state(info, fresh=True)  # the branch is the scheduler's word, not the run folder's
    if state == "RUNNING":
        workspace_folder(workspace, QUEUE, "slurm", "cancel", make=True)
        atomic_write_json(_cancel_flag(workspace, run), {"run": run, "job_id": info["job_id"], "time": time.time()})
        return f"{run}: stopping ({where}); what it finished is kept, `resume` continues it"
    if state in GONE:
        return f"{run}: {where} has ended already ({state})"
    if info["cluster"] == "local":
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(info["job_id"]), signal.SIGINT)
    else:
        done = _slurm("scancel", info["job_id"])
        if done is None or done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no answer"])[-1] if done is not None else "scancel not found"
            return f"{run}: scancel {info['job_id']} failed: {why}"
    _states.pop(f"{info['cluster']}:{info['job_id']}", None)
    event, _ = latest(run_path(workspace, run))
    if event.get("time", 0) >= info["submitted"] and event.get("status") == "interrupted":
        return f"{run}: {where} cancelled while it waited to be requeued; what it finished is kept"
    record_end(run_path(workspace, run), 130, info["submitted"], f"cancelled before it started ({info['job_id']})")
    return f"{run}: {where} cancelled before it started"
