"""Stopping a job as on Ctrl-C, asked from another process (`cancel`, the app, the queue's worker,
a Slurm task): the request is a file in the job's folder (a run folder's, or a study's) that the job
honours at its next event (`jobs.run.folder.RunFolder.emit`), whenever it arrived, then a SIGINT
makes it immediate where it can be heard.

    <folder>/stop.json   {"pid", "time"}: the job `pid` working in <folder> is asked to stop
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from jobs.run.files import atomic_write_json, read_record

STOP_FILE = "stop.json"
_watched: list[Path] = []  # stop files of work this process does around its runs (a study's), `watch_stop`


def request_stop(folder: Path, pid: int) -> None:
    """Ask the job `pid` working in `folder` (a run folder, or a study's) to stop as on Ctrl-C. The
    request is recorded first, in `folder`/stop.json, and honoured by the job at its next event
    (`RunFolder.emit`), whenever it arrived: while the job was still starting, or while it ignored
    or could not yet hear a signal; then a SIGINT makes it immediate where it can be heard."""
    atomic_write_json(folder / STOP_FILE, {"pid": pid, "time": time.time()})
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGINT)


def stop_requested(folder: Path) -> bool:
    """Whether a stop was requested of this process, in `folder` or in a folder it watches."""
    for where in (folder, *_watched):
        if (where / STOP_FILE).exists() and read_record(where / STOP_FILE).get("pid") == os.getpid():
            return True
    return False


def forget_stop(folder: Path, stale: bool = False) -> None:
    """Remove `folder`'s stop request: this process's (it is honoured), or with `stale` any other
    process's (that job has ended: the folder's lock is this process's now)."""
    file = folder / STOP_FILE
    if file.is_file() and not file.is_symlink():
        if (read_record(file).get("pid") == os.getpid()) != stale:
            file.unlink(missing_ok=True)


@contextlib.contextmanager
def watch_stop(folder: Path) -> Iterator[None]:
    """While the block runs, a stop requested in `folder` (a study's) stops this process's runs too."""
    forget_stop(folder, stale=True)
    _watched.append(folder)
    try:
        yield
    finally:
        _watched.remove(folder)
        forget_stop(folder)
