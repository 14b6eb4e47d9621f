"""Job processes, as the local queue, the Slurm tasks and the app see them: whether a pid is alive,
whether it is a factrecall job, and the one command that runs (or resumes) a run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TERM_STOPS = "FACTRECALL_TERM_STOPS"  # in a job process's environment: SIGTERM stops it as Ctrl-C does (jobs.cli)


def alive(pid: int | None) -> bool:
    """A process with this pid exists (ours or another user's) and has not exited: a zombie (a child
    that ended and that its parent, e.g. the app that started a worker, has not waited for) is not."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # no /proc (macOS), or it went between the two looks
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def is_job(pid: int | None) -> bool:
    """A live process that is a factrecall job (not a pid reused by something else since)."""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone, on Linux; no /proc at all (macOS): trust the pid
    except OSError:
        return True
    return b"jobs.cli" in cmdline or b"factrecall-jobs" in cmdline


def resume_command(
    workspace: Path, run: str, device: str | None = None, dump: bool = True, reuse: bool = True
) -> list[str]:
    """`factrecall-jobs resume RUN` as this Python runs it: what every background job is (the local
    worker's child, a Slurm task's child), so a job takes the CLI's own code path."""
    cmd = [sys.executable, "-m", "jobs.cli", "--workspace", str(workspace), "resume", run]
    cmd += ["--device", device] if device and device != "auto" else []
    cmd += [] if dump else ["--no-dump"]
    cmd += [] if reuse else ["--no-reuse"]
    return cmd


def take_request(flag: Path) -> bool:
    """Whether a request file (a `cancel` written for a job) is there; it is consumed (removed) if so.
    Two takers racing for it may both see it: a request is idempotent (stop this run)."""
    if flag.exists():
        flag.unlink(missing_ok=True)
        return True
    return False
