"""How factrecall reads and writes files: the one place that opens them, so that every file keeps the
same promises (docs/reliability.md).

- A file is written whole or not at all: to a temporary name in its folder, then renamed into place
  (`atomic_write_bytes`); a file appended to in place (events.jsonl, log.txt, job.out) is opened so
  that a symbolic link there is an error, never followed (`open_append`).
- A JSON file that is missing, torn, not JSON, or a folder where a file should be is one line naming
  it and saying what to do (`read_json`, `read_jsonl`), never a traceback.
- A file a step wrote is known by its digest (`digest`), recorded when the step finishes and checked
  when the file is read again, so a file swapped in from elsewhere is found by its content.
- An output a verb writes (`--hdf5`, `--csv`, `--out`) never replaces a file it did not write, nor
  lands inside what the verb reads (`check_output`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from jobs.errors import RunFolderError, first_line

# Files larger than this are known by a sample of their content (their size, and 1 MiB at the start,
# the middle and the end): a swapped file differs everywhere, a truncated one in size, and a 12 GB
# checkpoint is not read whole at every resume.
WHOLE_DIGEST_BYTES = 64 << 20
SAMPLE_BYTES = 1 << 20


def link_message(path: Path) -> str:
    return (f"{path} is a symbolic link (to {os.readlink(path)}): factrecall never writes through one; "
            "replace it with the file or folder it points to")


def open_append(path: Path) -> BinaryIO:
    """`path` opened for appending, created if need be, never through a symbolic link (a link there
    is a RunFolderError naming it): every file factrecall appends to in place goes through here."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RunFolderError(link_message(path)) from None
        if err.errno == errno.EISDIR:
            raise RunFolderError(folder_message(path)) from None
        raise
    return os.fdopen(fd, "ab")


def folder_message(path: Path) -> str:
    return f"{path} is a folder where a file should be; remove it (factrecall writes the file again)"


def check_no_links(folder: Path) -> None:
    """Refuse a folder that holds a symbolic link anywhere in it (a run folder received from someone
    else, or on a filesystem others can write to): everything a run writes must stay inside it."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                raise RunFolderError(link_message(Path(root, name)))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    if path.is_dir() and not path.is_symlink():
        raise RunFolderError(folder_message(path))
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


_MISSING = object()


def read_json(path: Path, repair: str, default: Any = _MISSING) -> Any:
    """The JSON value in `path` (`default` when it does not exist, if given). Anything else wrong with
    it is one RunFolderError naming the file and what to do about it (`repair`)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise RunFolderError(f"{path} is missing; {repair}") from None
    except IsADirectoryError:
        raise RunFolderError(f"{path} is a folder where a file should be; {repair}") from None
    except OSError as err:
        raise RunFolderError(f"{path} cannot be read ({err.strerror}); {repair}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path} is damaged ({first_line(err)}); {repair}") from None


def read_jsonl(path: Path, repair: str = "delete the run's data/ and done/ folders to make its data again") -> list[dict[str, Any]]:
    """Every row of a JSON Lines file factrecall wrote (each an object), or one line saying which file
    is damaged and what to do."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {repair}") from None
    except IsADirectoryError:
        raise RunFolderError(f"{path} is a folder where a file should be; {repair}") from None
    except OSError as err:
        raise RunFolderError(f"{path} cannot be read ({err.strerror}); {repair}") from None
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunFolderError(f"{path} is damaged at line {number} ({first_line(err)}); {repair}") from None
        if not isinstance(row, dict):
            raise RunFolderError(f"{path} is damaged at line {number} (not an object); {repair}")
        rows.append(row)
    return rows


def digest(path: Path) -> dict[str, Any]:
    """What a file is: its sha256 (of a sample of its content for a file over WHOLE_DIGEST_BYTES), its
    size, and its modification time (what lets a check skip reading it when it is untouched)."""
    if path.is_dir():
        raise RunFolderError(folder_message(path))
    st = path.stat()
    h = hashlib.sha256(str(st.st_size).encode())
    with path.open("rb") as f:
        if st.st_size <= WHOLE_DIGEST_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            for offset in (0, st.st_size // 2, st.st_size - SAMPLE_BYTES):
                f.seek(offset)
                h.update(f.read(SAMPLE_BYTES))
    return {"sha256": h.hexdigest(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def matches(path: Path, recorded: dict[str, Any]) -> bool | None:
    """Whether `path` is the file `recorded` (a `digest`) describes: None if it is missing, True if it
    is (untouched since, or read again and equal), False if its content differs."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_size == recorded.get("size") and st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    if path.is_dir():
        return False
    return st.st_size == recorded.get("size") and digest(path)["sha256"] == recorded.get("sha256")


# How a file factrecall writes begins: an existing file at an output path that does not begin so is
# someone else's (or one of the inputs) and is never replaced without --force.
OUTPUT_KINDS = {"hdf5": (b"\x89HDF\r\n\x1a\n",), "csv": (b"run,model,layer,",),
                "figure": (b"\x89PNG\r\n\x1a\n", b"%PDF", b"<?xml", b"<svg")}
_EXAMPLE = {"hdf5": "activations.h5", "csv": "probes.csv", "figure": "figure.png"}


def check_output(path: Path, kind: str, reads: Iterable[str | Path] = (), force: bool = False) -> Path:
    """The path a verb may write its `kind` of file to (OUTPUT_KINDS), its missing folders made: never
    inside a store or folder the verb reads (`reads`), never a folder, and never an existing file of
    another kind (a run's metrics.json, a store's zarr.json) unless `force`. A figure's name without
    an extension gets `.png` (what is written is what is printed)."""
    path = Path(path).expanduser()
    if kind == "figure" and not path.suffix and not path.is_dir():
        path = path.with_name(path.name + ".png")
    real = path.resolve()
    for source in reads:
        if "://" in str(source):
            continue
        inside = Path(source).resolve()
        if real == inside or inside in real.parents:
            raise RunFolderError(f"{path} is inside {source}, which this command reads; write it elsewhere")
    if path.is_dir():
        raise RunFolderError(f"{path} is a folder; give a file name, e.g. {path / _EXAMPLE[kind]}")
    if path.exists() and not force:
        with path.open("rb") as f:
            head = f.read(16)
        if not head.startswith(OUTPUT_KINDS[kind]):
            raise RunFolderError(f"{path} exists and is not a{'n HDF5' if kind == 'hdf5' else ' ' + kind.upper() if kind == 'csv' else ' figure'} "
                                 "file factrecall wrote; choose another name, or pass --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot make folder {path.parent} for {path}: {err.strerror}") from None
    return path
