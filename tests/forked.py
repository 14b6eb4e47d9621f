"""`factrecall-jobs` in a process of its own, started in milliseconds: for the tests that start a job
many times only to kill it (tests/jobs/test_faults.py starts about thirty).

A plain `python -m jobs.cli` pays about 5 s of imports (torch, transformers) before it does anything,
and on a loaded machine several times that, so most of a kill-and-resume test went on imports, and a
kill aimed at a step's start landed wherever the imports happened to end. Here a multiprocessing
fork server imports the job code once; each job is a fork of it: a real process with its own pid,
memory and file descriptors, killed by a real SIGKILL, running the very `main` the command line runs.
What it does not exercise is the command line's own start-up, which tests/jobs/test_cli_errors.py,
the real-full-disk test and every test that starts a job through the queue still do.

The server has imported torch but run nothing with it (no thread pool exists), so a fork is safe.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from pathlib import Path

_PRELOAD = ["jobs.cli", "jobs.run.pipeline", "jobs.run.model", "store"]
_context = None


def _fork_server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def _job(argv: list[str], environ: dict[str, str], cwd: str) -> None:
    os.setsid()  # its own session, as the queue starts a job: a signal to the test never reaches it
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from jobs.cli import main

    sys.exit(main(argv))


class Job:
    """The part of `subprocess.Popen` the tests use: pid, poll, wait, kill, send_signal, returncode
    (negative: killed by that signal)."""

    def __init__(self, argv: list[str]):
        self._proc = _fork_server().Process(target=_job, args=([str(a) for a in argv], dict(os.environ), os.getcwd()))
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self._proc.join(timeout)
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def job(workspace: Path, *argv: str) -> Job:
    """`factrecall-jobs --workspace WORKSPACE ARGV...`, started as its own process, output discarded."""
    return Job(["--workspace", str(workspace), *argv])
