"""The queue's worker (`factrecall-jobs worker`, started by `jobs.launch.queue.start_worker`): it runs the
queued jobs, one at a time on a CPU-only machine and one per GPU otherwise, each `factrecall-jobs
resume RUN` (or `reproduce` for a study) in its own process and session, honours the cancel requests
written for its jobs, records how a job that died without a word ended, and leaves when the queue is
empty. Only `visible_gpus` imports torch, and only the worker calls it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from jobs.errors import RunFolderError
from jobs.launch.procs import is_job, resume_command, take_request
from jobs.launch.queue_entries import STUDY, _entries, _read, _run_of, queue_dir, study_folder
from jobs.run.events import record_end
from jobs.run.files import atomic_write_json, hold_lock, open_append, take_lock
from jobs.run.folder import live_pid
from jobs.run.stop import request_stop
from jobs.run.workspace import QUEUE, RUNS, run_path
from jobs.run.workspace import folder as workspace_folder

POLL_S = 0.5


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
