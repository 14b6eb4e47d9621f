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
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from jobs.errors import RunFolderError, first_line
from store.fileio import DATA, RECORD, TEXT, Unreadable, kind_of, odd_entries, open_regular, read_regular

# Files larger than this are known by a sample of their content (their size, and 1 MiB at the start,
# the middle and the end): a swapped file differs everywhere, a truncated one in size, and a 12 GB
# checkpoint is not read whole at every resume.
WHOLE_DIGEST_BYTES = 64 << 20
SAMPLE_BYTES = 1 << 20


def link_message(path: Path) -> str:
    return (
        f"{path} is a symbolic link (to {os.readlink(path)}): factrecall never writes through one; "
        "replace it with the file or folder it points to"
    )


def _open_own(path: Path, flags: int) -> int:
    """A file factrecall keeps in place (appended to, or locked), opened (made if missing) never through
    a symbolic link and never blocking: a link, a folder, a FIFO, a device or a socket there is a
    RunFolderError naming it."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RunFolderError(link_message(path)) from None
        if err.errno == errno.EISDIR:
            raise RunFolderError(folder_message(path)) from None
        if err.errno == errno.ENXIO:
            raise RunFolderError(f"{path} is not a file (a socket or a pipe); remove it") from None
        raise
    kind = kind_of(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise RunFolderError(f"{path} is {kind}, not a file; remove it (factrecall makes it again)")
    os.set_blocking(fd, True)
    return fd


def open_append(path: Path) -> BinaryIO:
    """`path` opened for appending, created if need be, never through a symbolic link (a link there
    is a RunFolderError naming it): every file factrecall appends to in place goes through here."""
    return os.fdopen(_open_own(path, os.O_WRONLY | os.O_APPEND), "ab")


def take_lock(path: Path, what: str) -> int:
    """Hold the advisory lock file `path` for this process (made if missing, never through a link): the
    open file descriptor, to `hold_lock` once the holder's checks pass, `os.close` to let go. Another
    process holding it is one RunFolderError naming `what` and that process's pid. A reader that
    probes the lock (`lock_holder`) holds it for an instant: that is waited out (a second at most)."""
    fd = _open_own(path, os.O_RDWR)
    for attempt in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if attempt < 19:
                time.sleep(0.05)
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
    os.close(fd)
    raise RunFolderError(
        f"{what} is in use by pid {holder if holder.isdigit() else 'of another process'}; wait for it, or stop it first"
    )


def hold_lock(fd: int) -> None:
    """Write this process's pid into the lock `take_lock` took (what `lock_holder` and `status` read)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


def lock_holder(path: Path) -> int | None:
    """The pid of the process holding the lock file `path`, or None when none does (-1 when the holder
    wrote no pid yet). Probing the lock takes it for an instant; a holder-to-be retries (`take_lock`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if kind_of(os.fstat(fd).st_mode) is not None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def folder_message(path: Path) -> str:
    return f"{path} is a folder where a file should be; remove it (factrecall writes the file again)"


def check_no_links(folder: Path, links: bool = False) -> None:
    """Refuse a folder that holds a symbolic link, a FIFO, a device or a socket anywhere in it (a run
    folder received from someone else, or on a filesystem others can write to): everything a run
    writes must stay inside it, and everything it reads must be a file that can be read to its end.
    With `links`, a link is allowed where it leads to a file or folder (a Hugging Face cache's
    snapshot is links to its blobs); what it leads to must still be one."""
    try:
        for path, kind in odd_entries(folder, follow_links=links):
            if kind == "a symbolic link":
                raise RunFolderError(link_message(path))
            raise RunFolderError(
                f"{path} is {kind}, not a file: factrecall never reads or replaces one; remove it "
                "(what factrecall wrote there is made again)"
            )
    except OSError:  # a folder that cannot be listed: what is read from it says so
        pass


def safe_folder(root: Path, *parts: str, make: bool = True) -> Path:
    """The folder root/parts...: each part a real folder, made if missing (with `make`), never a
    symbolic link nor a file. `root` is the user's own choice (a workspace, a cache folder) and may
    itself be a link; below it, nothing factrecall writes or reuses is reached through one, so no
    write lands outside it and no file from outside is taken for its own. Every folder factrecall
    keeps in a workspace or a per-user folder is found through here (jobs.run.workspace)."""
    path = Path(root)
    for part in parts:
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            if not make:
                return Path(root, *parts)
            try:
                path.mkdir(parents=True)  # the root too, when it is missing
            except FileExistsError:  # made meanwhile by another process: looked at again
                mode = path.lstat().st_mode
            else:
                continue
        except OSError as err:
            raise RunFolderError(f"cannot look at {path} ({err.strerror}); check the folder's permissions") from None
        if stat.S_ISLNK(mode):
            raise RunFolderError(link_message(path))
        if not stat.S_ISDIR(mode):
            raise RunFolderError(f"{path} is {kind_of(mode) or 'a file'} where factrecall keeps a folder; move it away")
    return path


def _home_root(kind: str) -> Path | None:
    xdg = os.environ.get("XDG_CACHE_HOME" if kind == "cache" else "XDG_CONFIG_HOME", "")
    home = os.environ.get("HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg)
    if os.path.isabs(home) and home != "/":
        return Path(home, ".cache" if kind == "cache" else ".config")
    return None


def homeless_libraries() -> None:
    """Without a home (HOME empty, and no XDG folders), libraries that keep a cache would make one
    under `/` (matplotlib's /.cache/matplotlib as root): they get a temporary folder instead."""
    if _home_root("cache") is None and "MPLCONFIGDIR" not in os.environ:
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="factrecall-matplotlib-")


def user_folder(kind: str) -> Path | None:
    """factrecall's own folder in the user's cache (`kind` "cache": ~/.cache/factrecall) or config
    ("config": ~/.config/factrecall) folder, made if missing and never a link; None when the account
    has no home to keep it in (HOME empty or not absolute, and no XDG_CACHE_HOME/XDG_CONFIG_HOME):
    then nothing is kept between sessions, and nothing is written under `/`."""
    root = _home_root(kind)
    return None if root is None else safe_folder(root, "factrecall")


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


def read_bytes(path: Path, repair: str, limit: int = RECORD) -> bytes:
    """The bytes of the file at `path` (a regular file of at most `limit` bytes, `store.fileio`), or
    one RunFolderError naming it and saying what to do (`repair`): missing, a folder, a FIFO or a
    device, too large, unreadable. Never blocks."""
    try:
        return read_regular(path, limit)
    except Unreadable as err:
        raise RunFolderError(f"{path} {err.why}; {repair}") from None


def read_text(path: Path, repair: str, limit: int = TEXT) -> str:
    """`read_bytes` as UTF-8 text (text that is not is one line too)."""
    data = read_bytes(path, repair, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RunFolderError(f"{path} is damaged (not UTF-8 text); {repair}") from None


_MISSING = object()


def read_json(path: Path, repair: str, default: Any = _MISSING, limit: int = RECORD) -> Any:
    """The JSON value in `path` (`default` when it does not exist, if given). Anything else wrong with
    it is one RunFolderError naming the file and what to do about it (`repair`)."""
    try:
        data = read_regular(path, limit)
    except Unreadable as err:
        if err.missing and default is not _MISSING:
            return default
        raise RunFolderError(f"{path} {err.why}; {repair}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RunFolderError(f"{path} is damaged ({first_line(err)}); {repair}") from None


def read_record(path: Path) -> dict[str, Any]:
    """A small JSON object another process writes and a reader only consults (a queue entry, a
    scheduler record, a study's progress): {} when it is missing, damaged, not an object, larger than a
    record, or not a regular file; the reader then goes on as if it were not there."""
    try:
        value = read_json(path, "", default={})
    except RunFolderError:
        return {}
    return value if isinstance(value, dict) else {}


def read_jsonl(
    path: Path, repair: str = "delete the run's data/ and done/ folders to make its data again", limit: int = DATA
) -> list[dict[str, Any]]:
    """Every row of a JSON Lines file factrecall wrote (each an object), or one line saying which file
    is damaged and what to do."""
    data = read_bytes(path, repair, limit)
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise RunFolderError(f"{path} is damaged at line {number} ({first_line(err)}); {repair}") from None
        if not isinstance(row, dict):
            raise RunFolderError(f"{path} is damaged at line {number} (not an object); {repair}")
        rows.append(row)
    return rows


def read_rows(path: Path, make):
    """Every row of a JSON Lines file of the data step as `make(**row)`; a row of another shape is one
    line naming the file (a file from elsewhere, or damaged)."""
    rows = read_jsonl(path)
    try:
        return [make(**row) for row in rows]
    except TypeError as err:
        raise RunFolderError(
            f"{path} is damaged (a row does not fit: {err}); delete the run's data/ folder and "
            "done/data.json, and resume to make its data again"
        ) from None


def digest(path: Path) -> dict[str, Any]:
    """What a file is: its sha256 (of a sample of its content for a file over WHOLE_DIGEST_BYTES), its
    size, and its modification time (what lets a check skip reading it when it is untouched)."""
    try:
        f = open_regular(path)
    except Unreadable as err:
        raise RunFolderError(f"{path} {err.why}; remove it, and `factrecall-jobs resume` makes it again") from None
    st = os.fstat(f.fileno())
    h = hashlib.sha256(str(st.st_size).encode())
    with f:
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
OUTPUT_KINDS = {
    "hdf5": (b"\x89HDF\r\n\x1a\n",),
    "csv": (b"run,model,layer,",),
    "figure": (b"\x89PNG\r\n\x1a\n", b"%PDF", b"<?xml", b"<svg"),
}
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
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise RunFolderError(f"cannot look at {path} ({err.strerror}); choose another name") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise RunFolderError(f"{path} is a folder; give a file name, e.g. {path / _EXAMPLE[kind]}")
    if mode is not None and not stat.S_ISREG(mode):  # a link, a FIFO, a device (/dev/null): --force or not
        raise RunFolderError(
            f"{path} is {kind_of(mode)}, not a file: factrecall replaces only a regular file, even "
            "with --force; choose another name"
        )
    if mode is not None and not force:
        try:
            with open_regular(path) as f:
                head = f.read(16)
        except Unreadable as err:
            raise RunFolderError(f"{path} {err.why}; choose another name") from None
        if not head.startswith(OUTPUT_KINDS[kind]):
            what = "n HDF5" if kind == "hdf5" else " " + kind.upper() if kind == "csv" else " figure"
            raise RunFolderError(
                f"{path} exists and is not a{what} file factrecall wrote; choose another name, or pass --force to "
                "replace it"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot make folder {path.parent} for {path}: {err.strerror}") from None
    return path
