"""A run folder on disk, and the rules that make every step crash-safe:

- every file is written to a temporary name and renamed into place (a reader never sees half a file);
- a step marks itself done last (`done/<step>.json`), so a killed step is redone and a finished one skipped;
- one process works in a run folder at a time (`run.lock`, an advisory lock that dies with its process);
- `spec.json` is the run's identity: a different experiment in the same folder is refused.

Layout:
    runs/<name>/spec.json  data/  tokenizer/  checkpoints/<phase>/  metrics.json
                 events.jsonl  log.txt  done/  run.lock
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jobs.errors import RunFolderError
from jobs.run.spec import ExperimentSpec, spec_from_json
from jobs.words import ENDED

Event = dict[str, Any]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return out
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


class RunFolder:
    """An open, locked run folder. Use as a context manager."""

    def __init__(self, path: Path, spec: ExperimentSpec):
        self.path = path
        self.spec = spec
        self.listeners: list[Callable[[Event], None]] = []
        self._lock_fd: int | None = None
        self.log = logging.getLogger(f"factrecall.run.{path.name}")

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, path: Path, spec: ExperimentSpec) -> RunFolder:
        """Open `path` for `spec`: a new folder, or one holding the same experiment (resumed)."""
        spec_file = path / "spec.json"
        if spec_file.exists():
            old = load_spec(path)
            if old.identity() != spec.identity():
                diff = "; ".join(_differences(old.identity(), spec.identity())[:3])
                raise RunFolderError(
                    f"run folder {path} holds a different experiment ({diff}); pass --name to start "
                    f"a new run, or `factrecall-jobs resume {path.name}` to continue that one"
                )
        elif path.exists() and any(path.iterdir()):
            raise RunFolderError(f"{path} exists and is not a run folder (no spec.json); choose another --name")
        run = cls(path, spec)
        run._lock()
        atomic_write_json(spec_file, spec.model_dump(mode="json"))
        return run

    @classmethod
    def resume(cls, path: Path, device: str | None = None) -> RunFolder:
        spec = load_spec(path)
        if device is not None:
            spec = spec.model_copy(update={"device": device})
        run = cls(path, spec)
        run._lock()
        return run

    def _lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        # A reader (the TUI, `queue`) may hold the lock for an instant to see whether a job holds it.
        for attempt in range(20):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 19:
                    time.sleep(0.05)
        else:
            os.close(fd)
            holder = (self.path / "run.lock").read_text().strip() or "another process"
            raise RunFolderError(
                f"run {self.path.name} is in use by pid {holder}; wait for it, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        handler = logging.FileHandler(self.path / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.handlers[:] = [handler]
        self.log.setLevel(logging.INFO)
        self.log.propagate = False

    def close(self) -> None:
        for handler in self.log.handlers:
            handler.close()
        self.log.handlers[:] = []
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps ---------------------------------------------------------------------------------
    def is_done(self, step: str) -> bool:
        return (self.path / "done" / f"{step}.json").exists()

    def mark_done(self, step: str, **info: Any) -> None:
        atomic_write_json(self.path / "done" / f"{step}.json", {"step": step, "time": time.time(), **info})
        self.emit("step", step=step, status="done", **info)

    # -- events --------------------------------------------------------------------------------
    def emit(self, kind: str, **fields: Any) -> None:
        """Append one event to events.jsonl (what `status` and the TUI follow) and tell listeners."""
        event = {"time": round(time.time(), 3), "kind": kind, **fields}
        with (self.path / "events.jsonl").open("a") as f:
            f.write(json.dumps(event) + "\n")
        if kind != "progress":
            self.log.info("%s %s", kind, json.dumps(fields))
        for listener in self.listeners:
            listener(event)

    # -- metrics -------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        return read_metrics(self.path)

    def update_metrics(self, key: str | tuple[str, ...], value: Any) -> None:
        """Set metrics[key] (a tuple is a path into nested tables) and rewrite metrics.json atomically."""
        metrics = self.metrics()
        path = (key,) if isinstance(key, str) else key
        node = metrics
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        atomic_write_json(self.path / "metrics.json", metrics)


def _parse(line: bytes) -> Event | None:
    """One line of events.jsonl; None for a line cut short (a job killed mid-write) or not an event."""
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def read_events(path: Path) -> list[Event]:
    """Every event of run folder `path`'s events.jsonl, oldest first (torn lines skipped)."""
    try:
        data = (path / "events.jsonl").read_bytes()
    except FileNotFoundError:
        return []
    return [e for line in data.splitlines() if (e := _parse(line)) is not None]


def events_backwards(path: Path, block: int = 1 << 16) -> Iterator[Event]:
    """The events of run folder `path`'s events.jsonl, newest first, read from the end a block at a
    time: a reader looking for the last event of some kind reads only as far back as it is, however
    many progress events a long run wrote after it."""
    try:
        f = (path / "events.jsonl").open("rb")
    except FileNotFoundError:
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
    with contextlib.suppress(OSError), (folder / "events.jsonl").open("a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), "kind": "run", "status": status, "error": error}) + "\n")


def live_pid(run_folder: Path) -> int | None:
    """The pid of the process holding `run_folder` (its run.lock), or None when none does (-1 when
    the holder wrote no pid yet). Probing the lock takes it for an instant; a job that meets the
    probe retries (RunFolder._lock)."""
    try:
        fd = os.open(run_folder / "run.lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def load_spec(path: Path) -> ExperimentSpec:
    spec_file = path / "spec.json"
    if not spec_file.exists():
        raise RunFolderError(f"{path} is not a run folder (no spec.json); `factrecall-jobs run` makes one")
    return spec_from_json(spec_file.read_text(), str(spec_file))


def read_done(path: Path, step: str) -> dict[str, Any]:
    """What run folder `path`'s step left in its done marker ({} when it is not done)."""
    file = path / "done" / f"{step}.json"
    return json.loads(file.read_text()) if file.exists() else {}


def read_metrics(path: Path) -> dict[str, Any]:
    file = path / "metrics.json"
    return json.loads(file.read_text()) if file.exists() else {}


def resolve_run(workspace: Path, run: str) -> Path:
    """A run given by name (under workspace/runs) or by path."""
    for candidate in (workspace / "runs" / run, Path(run)):
        if (candidate / "spec.json").exists():
            return candidate
    known = sorted(p.name for p in (workspace / "runs").glob("*") if (p / "spec.json").exists())
    hint = f"; runs in {workspace / 'runs'}: {', '.join(known)}" if known else f"; {workspace / 'runs'} has none"
    raise RunFolderError(f"no run {run!r}{hint}")
