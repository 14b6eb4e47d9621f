"""The one way factrecall opens a file to read it (importable from every layer: no zarr, no numpy).

A file handed over by someone else (a run folder, a store, a study folder, a queue entry, a model's
manifest, a per-user cache or settings file) may be anything at all where a file is expected: a FIFO
(reading it blocks for ever), a character device such as /dev/zero (reading it never ends), a socket,
a folder, or a regular file of 3 GB where a 2 KB record belongs. `open_regular` and `read_regular`
refuse each of these in one phrase (`Unreadable.why`) without blocking and before reading a byte:

- the path is looked at first (`stat`), so a device is never even opened (opening one can have effects);
- it is then opened non-blocking and looked at again through the open file (`fstat`), so what is read
  is what was checked;
- `read_regular` reads at most `limit` bytes: a file larger than what it can be is refused by its size.

Each front door turns `Unreadable` into its own one-line error with what to do about it
(`jobs.run.files.read_bytes`: a RunFolderError; the store: a StoreError).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# What a file of each kind can be at most: large enough for anything factrecall writes there, small
# enough that a crafted one cannot take the machine's memory.
RECORD = 16 * MIB  # a JSON record: a spec, a done marker, metrics, a manifest, a queue entry, settings
TEXT = 16 * MIB  # a report's markdown, a model's config or tokenizer files' JSON
DATA = 4 * GIB  # a run's data (JSON lines for up to tens of millions of people)


class Unreadable(Exception):
    """Why a file cannot be read, as a phrase that follows its path ("is a FIFO (named pipe), not a
    file"); `missing` when there is nothing there at all."""

    def __init__(self, path: Path, why: str, missing: bool = False):
        super().__init__(f"{path} {why}")
        self.path, self.why, self.missing = path, why, missing


def size_text(n: float) -> str:
    """Bytes in words: 512 bytes, 3.2 KiB, 16 MiB, 2.1 GiB."""
    if n < KIB:
        return f"{int(n)} bytes"
    for unit, size in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{int(n)} bytes"  # pragma: no cover


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def kind_of(mode: int) -> str | None:
    """What a file of this mode is, in words, when it is not a regular file (None when it is)."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def odd_entries(root: str | Path, follow_links: bool = False) -> Iterator[tuple[Path, str]]:
    """Every entry under the folder `root` that is neither a folder nor a regular file, with what it is
    ("a FIFO (named pipe)", "a symbolic link", ...): what a folder handed over (a run folder, a store,
    a checkpoint) must not hold, since a reader opens its files by path. With `follow_links`, a link is
    judged by what it leads to (a dangling one passes). One walk, the types coming with the listing;
    an entry that vanishes meanwhile is skipped; a folder that cannot be listed is an OSError."""
    todo = [Path(root)]
    while todo:
        folder = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                todo.append(Path(entry.path))
            elif not entry.is_file(follow_symlinks=False):
                try:
                    mode = (os.stat if follow_links else os.lstat)(entry.path).st_mode
                except FileNotFoundError:
                    continue
                if kind_of(mode) not in (None, "a folder"):
                    yield Path(entry.path), kind_of(mode)


def _why_not(mode: int) -> str | None:
    kind = kind_of(mode)
    if kind is None:
        return None
    return "is a folder where a file should be" if kind == "a folder" else f"is {kind}, not a file"


def open_regular(path: str | Path, limit: int | None = None) -> BinaryIO:
    """`path` opened for reading in binary, checked to be a regular file (a link to one is followed)
    of at most `limit` bytes; anything else is `Unreadable`, found without blocking."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Unreadable(path, "is missing", missing=True) from None
    except OSError as err:
        raise Unreadable(path, f"cannot be read ({err.strerror or err})") from None
    if (why := _why_not(st.st_mode)) is not None:
        raise Unreadable(path, why)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise Unreadable(path, "is missing", missing=True) from None
    except OSError as err:
        if err.errno == errno.ENXIO:  # a socket (or a FIFO swapped in since the look)
            raise Unreadable(path, "is not a file (a socket or a pipe)") from None
        raise Unreadable(path, f"cannot be read ({err.strerror or err})") from None
    try:
        st = os.fstat(fd)
        if (why := _why_not(st.st_mode)) is not None:
            raise Unreadable(path, why)
        if limit is not None and st.st_size > limit:
            raise Unreadable(
                path,
                f"is {size_text(st.st_size)}, more than such a file can be ({size_text(limit)}): "
                "not a file factrecall wrote",
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (`Unreadable` otherwise)."""
    with open_regular(path, limit) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            parts = [f.read(size + 1)]  # as large as the look said (a read of `limit` would take it all up front)
            got = len(parts[0])
            while got > size and got <= limit:  # it grew after the look: read on, to the limit at most
                part = f.read(min(MIB, limit + 1 - got))
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except OSError as err:
            raise Unreadable(Path(path), f"cannot be read ({err.strerror or err})") from None
    if got > limit:
        raise Unreadable(
            Path(path), f"is more than such a file can be ({size_text(limit)}): not a file factrecall wrote"
        )
    return parts[0] if len(parts) == 1 else b"".join(parts)
