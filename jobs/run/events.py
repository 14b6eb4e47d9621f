"""What a run's events say (RUN/events.jsonl, one JSON object a line, appended by the job):
how far the running job is and how the last one ended, read backwards from the end so a long run's
history costs nothing; and recording the end of a job that could not say it itself."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.errors import RunFolderError
from jobs.run.files import open_append
from jobs.words import ENDED
from store.fileio import Unreadable, open_regular

Event = dict[str, Any]


def _parse(line: bytes) -> Event | None:
    """One line of events.jsonl; None for a line cut short (a job killed mid-write) or one that is not
    an event factrecall writes (not an object, no kind, a time or a run status of the wrong kind):
    readers skip it, as if it were not there."""
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("kind"), str)
        or not isinstance(event.get("time", 0), (int, float))
        or isinstance(event.get("time"), bool)
    ):
        return None
    if event["kind"] == "run" and event.get("status") not in ("running", *ENDED):
        return None
    return event


def read_events(path: Path) -> list[Event]:
    """Every event of run folder `path`'s events.jsonl, oldest first (torn lines skipped)."""
    try:
        with open_regular(path / "events.jsonl") as f:
            data = f.read()
    except (OSError, Unreadable):  # none yet, or not a file (a FIFO, a device): no events to read
        return []
    return [e for line in data.splitlines() if (e := _parse(line)) is not None]


def events_backwards(path: Path, block: int = 1 << 16) -> Iterator[Event]:
    """The events of run folder `path`'s events.jsonl, newest first, read from the end a block at a
    time: a reader looking for the last event of some kind reads only as far back as it is, however
    many progress events a long run wrote after it."""
    try:
        f = open_regular(path / "events.jsonl")
    except (OSError, Unreadable):  # none yet, or not a file: no events to read (writing there says what is wrong)
        return
    with f:
        end = f.seek(0, 2)
        rest = b""  # the start of a line whose beginning lies in the block before
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start) + rest
            end = start
            lines = chunk.split(b"\n")
            rest = lines.pop(0) if start > 0 else b""
            for line in reversed(lines):
                if line.strip() and (event := _parse(line)) is not None:
                    yield event


def latest(path: Path) -> tuple[Event, Event]:
    """(the last `run` event, the last `start` or `progress` event written after it): how a run's last
    job ended or how far the running one is. Each is {} when there is none."""
    current: Event = {}
    for event in events_backwards(path):
        if event.get("kind") == "run":
            return event, current
        if not current and event.get("kind") in ("start", "progress"):
            current = event
    return {}, current


# Exit codes of a job process that was stopped rather than broken: Ctrl-C, SIGINT, SIGTERM, SIGKILL.
INTERRUPTED_CODES = (130, -signal.SIGINT, -signal.SIGTERM, 143, -signal.SIGKILL)


def record_end(folder: Path, code: int, since: float, error: str) -> None:
    """End a run in its events.jsonl for a job that ended without saying so (killed, out of memory,
    dropped by a scheduler) since `since`, so that nobody waits on it: `interrupted` for the codes of
    a stop, `failed` otherwise. Does nothing when the job recorded its own end."""
    last, _ = latest(folder)
    if last.get("time", 0) >= since and last.get("status") in ENDED:
        return
    status = "interrupted" if code in INTERRUPTED_CODES else "failed"
    with contextlib.suppress(OSError, RunFolderError), open_append(folder / "events.jsonl") as f:
        f.write(
            (
                json.dumps({"time": round(time.time(), 3), "kind": "run", "status": status, "error": error}) + "\n"
            ).encode()
        )
