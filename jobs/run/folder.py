"""A run folder on disk, and the rules that make every step crash-safe and every folder trustworthy:

- every file is written whole, then renamed into place, and nothing through a symbolic link
  (`jobs.run.files`); a run folder with a link in it is refused when it is opened;
- a step marks itself done last (`done/<step>.json`), so a killed step is redone and a finished one
  skipped; the marker records what the step wrote (each file's digest) and read (its inputs' digests)
  and its results: a marker whose outputs are missing, or whose inputs changed, is not done (the
  step runs again), and an output whose content is not what its step wrote is refused;
- metrics.json is built from the markers' results, so a lost or damaged one is rebuilt on opening
  (`jobs.run.markers`: what a step's name says of its marker, and where its results go);
- one process works in a run folder at a time (`run.lock`, an advisory lock that dies with its process),
  and another process asks it to stop through the folder (`jobs.run.stop`);
- `spec.json` is the run's identity: a different experiment in the same folder is refused, and so is
  a spec.json edited after the run began (the data step records the identity it was made for).

Layout:
    runs/<name>/spec.json  data/  tokenizer/  checkpoints/<phase>/  metrics.json
                 events.jsonl  log.txt  done/  run.lock
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jobs.errors import RunFolderError
from jobs.run.events import Event
from jobs.run.files import (
    atomic_write_json,
    check_no_links,
    digest,
    folder_message,
    hold_lock,
    link_message,
    lock_holder,
    matches,
    open_append,
    read_bytes,
    read_json,
    take_lock,
)
from jobs.run.markers import get_in, implied_outputs, metrics_key, set_in
from jobs.run.spec import NEWCOMERS, ExperimentSpec, is_name, spec_from_json
from jobs.run.stop import forget_stop, stop_requested
from jobs.run.stop import request_stop as request_stop  # its old home, named by docs/architecture.md
from jobs.run.stop import watch_stop as watch_stop  # where jobs.study.reproduce finds it
from jobs.run.workspace import RUNS
from jobs.run.workspace import folder as workspace_folder

REBUILD = "`factrecall-jobs resume RUN` rebuilds it from the run's done markers"
LOG_PROGRESS_EVERY_S = 30.0  # progress goes to log.txt this often (events.jsonl has every report)


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return out
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def _spelled_out(spec: ExperimentSpec) -> dict[str, Any]:
    """A spec's identity with the settings it leaves out at their "as before" value written in, so
    that a difference in one reads `train.precision: 'fp32' -> 'bf16'`, not `None -> 'bf16'`."""
    ident = spec.identity()
    for section, settings in NEWCOMERS.items():
        for key, before in settings.items():
            ident[section].setdefault(key, before)
    return ident


class RunFolder:
    """An open, locked run folder. Use as a context manager."""

    def __init__(self, path: Path, spec: ExperimentSpec):
        self.path = path
        self.spec = spec
        self.listeners: list[Callable[[Event], None]] = []
        self._lock_fd: int | None = None
        self._checked: set[str] = set()  # steps verified done in this process
        self._shas: dict[str, tuple[tuple, str]] = {}  # file -> ((size, mtime_ns), sha256) seen in this process
        self._logged_progress = 0.0
        self._stopping = False  # a stop request was honoured: the job is ending
        self.log = logging.getLogger(f"factrecall.run.{path.name}")

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, path: Path, spec: ExperimentSpec) -> RunFolder:
        """Open `path` for `spec`: a new folder, or one holding the same experiment (resumed)."""
        spec_file = path / "spec.json"
        if spec_file.exists():
            old = load_spec(path)
            if old.identity() != spec.identity():
                diff = "; ".join(_differences(_spelled_out(old), _spelled_out(spec))[:3])
                if old.preset == spec.preset and path.name == spec.default_name():
                    # The stock preset's own name, holding other settings: the preset changed since.
                    raise RunFolderError(
                        f"run folder {path} was made by an earlier {spec.preset} preset ({diff}); "
                        f"`factrecall-jobs resume {path.name}` continues it as it was made, or pass --name "
                        "to start a run of today's preset beside it"
                    )
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
        if self.path.is_symlink():
            raise RunFolderError(link_message(self.path))
        self.path.mkdir(parents=True, exist_ok=True)
        fd = take_lock(self.path / "run.lock", f"run {self.path.name}")
        try:
            # Held: no job of ours adds anything while these look. Both refuse before a byte is written.
            check_no_links(self.path)
            self._check_identity()
        except RunFolderError:
            os.close(fd)
            raise
        hold_lock(fd)
        self._lock_fd = fd
        forget_stop(self.path, stale=True)  # a request for a job that has ended; one for this job stands
        handler = logging.StreamHandler(
            io.TextIOWrapper(open_append(self.path / "log.txt"), encoding="utf-8", line_buffering=True)
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.handlers[:] = [handler]
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self._repair_metrics()

    def _check_identity(self) -> None:
        """Refuse a spec.json edited after the run began: its data were made for the identity the data
        step recorded."""
        made_for = (self._record("data", repair=False) or {}).get("identity")
        if made_for is not None and made_for != self.spec.identity():
            diff = "; ".join(_differences(made_for, self.spec.identity())[:3])
            raise RunFolderError(
                f"{self.path / 'spec.json'} was changed after the run began ({diff}); put it back, "
                "or start a new run with --name"
            )

    def close(self) -> None:
        for handler in self.log.handlers:
            handler.close()
            if isinstance(handler, logging.StreamHandler):
                handler.stream.close()  # our log.txt (a StreamHandler leaves its stream open)
        self.log.handlers[:] = []
        if self._lock_fd is not None:
            forget_stop(self.path)  # honoured (or never needed): this job ends here
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps ---------------------------------------------------------------------------------
    def _marker(self, step: str) -> Path:
        return self.path / "done" / f"{step}.json"

    def _record(self, step: str, repair: bool = True) -> dict[str, Any] | None:
        """The step's done marker; None when there is none, or (with `repair`) when it is damaged (then
        it is removed: the step runs again)."""
        if self._marker(step).is_dir():
            raise RunFolderError(folder_message(self._marker(step)))
        try:
            record = read_json(self._marker(step), "", default=None)
        except RunFolderError:
            record = "damaged"
        if record is None:
            return None
        if not isinstance(record, dict):
            if repair:
                self._undo(step, "its done marker is damaged")
            return None
        return record

    def is_done(self, step: str) -> bool:
        """Whether `step` finished and what it left is still there and its own. A marker whose outputs
        are missing, or whose inputs changed since, is not done: it is removed and the step runs again.
        An output whose content is not what the step recorded (a file from elsewhere) is refused."""
        if step in self._checked:
            return True
        record = self._record(step)
        if record is None:
            return False
        why = self._stale(step, record)
        if why:
            self._undo(step, why)
            return False
        inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
        if all((self.path / rel).exists() for rel in inputs):
            self._checked.add(step)  # else asked again once the step that makes the missing input has run
        return True

    def _stale(self, step: str, record: dict[str, Any]) -> str | None:
        """Why a marked step is not done any more (None when it is)."""
        outputs = record.get("outputs") if isinstance(record.get("outputs"), dict) else {}
        for rel in [*outputs, *(r for r in implied_outputs(step) if r not in outputs)]:
            found = (
                matches(self.path / rel, outputs[rel])
                if rel in outputs
                else (True if (self.path / rel).exists() else None)
            )
            if found is None:
                return f"{rel} is missing"
            if found is False:
                raise RunFolderError(
                    f"{self.path / rel} is not the file {step} wrote (its content differs: "
                    f"copied from elsewhere, or damaged); delete it, and `factrecall-jobs resume "
                    f"{self.path.name}` makes it again"
                )
        inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
        for rel, sha in inputs.items():
            if not (self.path / rel).exists():
                continue  # its maker runs again first (its output is missing): then this is decided
            if (current := self._sha(self.path / rel)) != sha:
                made_by = self._producer(rel)
                if made_by is not None and made_by[1] != current:  # damaged or foreign: its maker says so
                    self._stale(made_by[0], self._record(made_by[0], repair=False) or {})
                return f"{rel}, which it read, has changed since"
        key = metrics_key(step)
        if key and "metrics" not in record and get_in(self.metrics(), key) is None:
            return "its results are not in metrics.json"
        return None

    def _producer(self, rel: str) -> tuple[str, str] | None:
        """The step whose marker records `rel` as its output, and the sha256 it recorded."""
        for marker in sorted((self.path / "done").glob("*.json")):
            recorded = ((self._record(marker.stem, repair=False) or {}).get("outputs") or {}).get(rel)
            if isinstance(recorded, dict):
                return marker.stem, recorded.get("sha256", "")
        return None

    def _undo(self, step: str, why: str) -> None:
        self._marker(step).unlink(missing_ok=True)
        self._checked.discard(step)
        self.emit("step", step=step, status="redo", why=why)

    def _sha(self, path: Path) -> str:
        """The sha256 of a file of the run (`digest`'s), read once per process while the file is untouched,
        and not at all when a done marker recorded it untouched."""
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        rel = str(path.relative_to(self.path))
        if rel in self._shas and self._shas[rel][0] == stamp:
            return self._shas[rel][1]
        for marker in sorted((self.path / "done").glob("*.json")):
            recorded = (self._record(marker.stem, repair=False) or {}).get("outputs", {}).get(rel)
            if isinstance(recorded, dict) and (recorded.get("size"), recorded.get("mtime_ns")) == stamp:
                self._shas[rel] = (stamp, recorded["sha256"])
                return recorded["sha256"]
        sha = digest(path)["sha256"]
        self._shas[rel] = (stamp, sha)
        return sha

    def mark_done(
        self,
        step: str,
        *,
        outputs: Iterable[Path] = (),
        inputs: Iterable[Path] = (),
        metrics: tuple[tuple[str, ...], Any] | None = None,
        keep: dict[str, Any] | None = None,
        **info: Any,
    ) -> None:
        """Record `step` as finished: `info` (shown in events and the console), the digest of each file
        it wrote (`outputs`) and read (`inputs`, files of this run only), its results (`metrics`:
        where they go in metrics.json, and what), which metrics.json is rebuilt from if it is lost,
        and what only later checks read (`keep`: the spec's identity, the store's fingerprint)."""
        record: dict[str, Any] = {"step": step, "time": time.time(), **info, **(keep or {})}
        written = {}
        for path in outputs:
            rel, found = str(path.relative_to(self.path)), digest(path)
            written[rel] = found
            self._shas[rel] = ((found["size"], found["mtime_ns"]), found["sha256"])
        if written:
            record["outputs"] = written
        read = {str(p.relative_to(self.path)): self._sha(p) for p in inputs if p.is_relative_to(self.path)}
        if read:
            record["inputs"] = read
        if metrics is not None:
            key, value = metrics
            self.update_metrics(key, value)
            record["metrics"] = {"key": list(key), "value": value}
        atomic_write_json(self._marker(step), record)
        self._checked.add(step)
        self.emit("step", step=step, status="done", **info)

    # -- events --------------------------------------------------------------------------------
    def emit(self, kind: str, **fields: Any) -> None:
        """Append one event to events.jsonl (what `status` and the TUI follow) and tell listeners.
        Every event but a job's own beginning and end is also where a stop request is honoured
        (`request_stop`): the job stops there as on Ctrl-C."""
        if kind not in ("run", "note") and not self._stopping and stop_requested(self.path):
            self._stopping = True
            raise KeyboardInterrupt
        event = {"time": round(time.time(), 3), "kind": kind, **fields}
        with open_append(self.path / "events.jsonl") as f:
            f.write((json.dumps(event) + "\n").encode())
        if kind != "progress" or time.monotonic() - self._logged_progress >= LOG_PROGRESS_EVERY_S:
            if kind == "progress":  # a line now and then, so a long step shows in log.txt too
                self._logged_progress = time.monotonic()
            self.log.info("%s %s", kind, json.dumps(fields))
        for listener in self.listeners:
            listener(event)

    # -- metrics -------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        return read_metrics(self.path)

    def update_metrics(self, key: str | tuple[str, ...], value: Any) -> None:
        """Set metrics[key] (a tuple is a path into nested tables) and rewrite metrics.json atomically."""
        metrics = self.metrics()
        set_in(metrics, (key,) if isinstance(key, str) else tuple(key), value)
        atomic_write_json(self.path / "metrics.json", metrics)

    def _repair_metrics(self) -> None:
        """metrics.json as the done markers say it: rebuilt when it is lost, damaged, or lacks (or
        differs in) a result a marker holds. Markers from before markers held results give back the
        training summaries they recorded (without curves); their evaluations run again."""
        try:
            current = read_json(self.path / "metrics.json", "", default={})
        except RunFolderError:
            current = None
        rebuilt = json.loads(json.dumps(current)) if isinstance(current, dict) else {}
        for marker in sorted((self.path / "done").glob("*.json")) if (self.path / "done").is_dir() else []:
            record = self._record(marker.stem, repair=False)
            if record is None:
                continue
            held = record.get("metrics")
            if isinstance(held, dict) and isinstance(held.get("key"), list) and held["key"]:
                set_in(rebuilt, tuple(held["key"]), held.get("value"))
            elif marker.stem.startswith("train-") and get_in(rebuilt, ("train", marker.stem[6:])) is None:
                summary = {k: v for k, v in record.items() if k not in ("step", "time", "outputs", "inputs")}
                if "steps" in summary:
                    set_in(rebuilt, ("train", marker.stem[6:]), summary)
        if rebuilt != current:
            atomic_write_json(self.path / "metrics.json", rebuilt)
            self.emit("note", text="metrics.json rebuilt from the done markers")


def live_pid(run_folder: Path) -> int | None:
    """The pid of the process holding `run_folder` (its run.lock), or None when none does (-1 when
    the holder wrote no pid yet)."""
    return lock_holder(run_folder / "run.lock")


def load_spec(path: Path) -> ExperimentSpec:
    spec_file = path / "spec.json"
    if not spec_file.exists() and not spec_file.is_symlink():
        raise RunFolderError(f"{path} is not a run folder (no spec.json); `factrecall-jobs run` makes one")
    repair = "it is the run's identity: put the run's spec.json back, or start a new run"
    try:
        text = read_bytes(spec_file, repair).decode("utf-8")
    except UnicodeDecodeError:
        raise RunFolderError(f"{spec_file} cannot be read (not UTF-8 text); {repair}") from None
    return spec_from_json(text, str(spec_file))


def read_done(path: Path, step: str) -> dict[str, Any]:
    """What run folder `path`'s step left in its done marker ({} when it is not done, or damaged)."""
    try:
        record = read_json(path / "done" / f"{step}.json", "", default={})
    except RunFolderError:
        return {}
    return record if isinstance(record, dict) else {}


def read_metrics(path: Path) -> dict[str, Any]:
    """A run's metrics.json ({} before the first result); damaged, it is one line saying how to rebuild it."""
    metrics = read_json(path / "metrics.json", REBUILD.replace("RUN", path.name), default={})
    if not isinstance(metrics, dict):
        raise RunFolderError(
            f"{path / 'metrics.json'} is damaged (not a JSON object); " + REBUILD.replace("RUN", path.name)
        )
    return metrics


def resolve_run(workspace: Path, run: str) -> Path:
    """A run given by name (under workspace/runs) or by path."""
    runs = workspace_folder(workspace, RUNS)
    for candidate in (runs / run, Path(run)):
        if (candidate / "spec.json").exists():
            return candidate
    known = (
        sorted(p.name for p in runs.glob("*") if is_name(p.name) and (p / "spec.json").exists())
        if runs.is_dir()
        else []
    )
    shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
    hint = f"; runs in {runs}: {shown}" if known else f"; {runs} has none"
    raise RunFolderError(f"no run {run!r}{hint}")
