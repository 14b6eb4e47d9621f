"""Step 4 of checking a store (`store.validate`): its chunks, bounded before they are decoded. Zarr reads
every chunk of a checked group through `CheckedStore`, which refuses a chunk larger than its array's
chunks can be (`ChunkLimit`, from `store.arrays.check_array`), a zstd chunk whose frames declare more
bytes than a chunk holds, and a string chunk that says it holds another count of strings, before
anything is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numcodecs.zstd import Zstd
from zarr.abc.store import RangeByteRequest
from zarr.storage import WrapperStore

from store.errors import first_line
from store.validate import MAX_META_BYTES, damaged, is_local, local_path


@dataclass(frozen=True)
class ChunkLimit:
    """What one chunk of an array may be: its stored bytes at most, and its decoded bytes (exactly
    for a fixed-size data type, at most for strings), checked before zarr decodes it; for strings,
    how many it holds (numcodecs' vlen-utf8 allocates the count its chunk's header says)."""

    stored: int
    decoded: int
    exact: bool
    zstd: bool
    strings: int | None = None


_ZSTD_MAGIC = 0xFD2FB528


def zstd_content_size(data: memoryview) -> int | None:
    """The decoded size zstd frames declare (the sum over the frames, as numcodecs allocates it);
    None where the data is not whole zstd frames or a frame does not declare its size. Reads the
    frame and block headers only (RFC 8878), so a chunk that would inflate to gigabytes is refused
    having been read, never decoded."""
    pos, total, n = 0, 0, len(data)
    while pos < n:
        if n - pos < 8:
            return None
        magic = int.from_bytes(data[pos : pos + 4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: its length, then that many bytes
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
            continue
        if magic != _ZSTD_MAGIC:
            return None
        descriptor = data[pos + 4]
        pos += 5
        single, size_flag = (descriptor >> 5) & 1, descriptor >> 6
        if descriptor & 0x08:  # the reserved bit
            return None
        pos += (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]  # window descriptor, dictionary id
        width = ((1 if single else 0), 2, 4, 8)[size_flag]
        if width == 0 or pos + width > n:
            return None
        total += int.from_bytes(data[pos : pos + width], "little") + (256 if width == 2 else 0)
        pos += width
        while True:  # the blocks: a 3-byte header each (last flag, type, size)
            if pos + 3 > n:
                return None
            header = int.from_bytes(data[pos : pos + 3], "little")
            kind, size = (header >> 1) & 3, header >> 3
            if kind == 3:
                return None
            pos += 3 + (1 if kind == 1 else size)
            if header & 1:
                break
        pos += 4 if descriptor & 0x04 else 0  # the content checksum
    return total if pos == n else None


class CheckedStore(WrapperStore):
    """The store zarr reads a checked group through: every chunk of a schema array is read with a
    bound (at most what a chunk of it can hold, plus one byte to tell more), and a zstd chunk's
    declared decoded size is checked against its array's chunk size before zarr decodes it; a string
    chunk's count of strings against its chunk shape (decoded here, within that bound: numcodecs
    allocates whatever count the chunk says). Metadata files are capped like `read_json`. Anything
    else is passed through as it is."""

    def __init__(self, store: Any, limits: dict[str, ChunkLimit], url: str):
        super().__init__(store)
        self.limits, self.url = limits, url

    def _with_store(self, store: Any) -> CheckedStore:
        return type(self)(store, self.limits, self.url)

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        if byte_range is not None:
            return await self._store.get(key, prototype, byte_range)
        name, _, rest = key.partition("/")
        limit = self.limits.get(name) if rest.startswith("c/") else None
        cap = limit.stored if limit is not None else MAX_META_BYTES
        buf = await self._store.get(key, prototype, RangeByteRequest(0, cap + 1))
        if buf is None:
            return None
        if len(buf) > cap:
            raise damaged(self.url, f"its file {key} has more than the {cap:,} bytes it may have")
        if limit is not None and limit.zstd:
            size = zstd_content_size(memoryview(buf.as_numpy_array()))
            if size is None:
                raise damaged(self.url, f"its chunk {key} is not zstd frames that declare their size")
            if limit.exact and size != limit.decoded:
                raise damaged(
                    self.url,
                    f"its chunk {key} would decode to {size:,} bytes, not the "
                    f"{limit.decoded:,} a chunk of {name} holds",
                )
            if size > limit.decoded:
                raise damaged(
                    self.url,
                    f"its chunk {key} would decode to {size:,} bytes, more than the "
                    f"{limit.decoded:,} a chunk of {name} may hold",
                )
        if limit is not None and limit.strings is not None:
            data = buf.to_bytes()
            if limit.zstd:
                try:
                    data = bytes(Zstd().decode(data))
                except (RuntimeError, ValueError) as err:
                    raise damaged(self.url, f"its chunk {key} does not decode: {first_line(err)}") from None
            count = int.from_bytes(data[:4], "little") if len(data) >= 4 else None
            if count != limit.strings:
                raise damaged(
                    self.url,
                    f"its chunk {key} says it holds {count} strings, not the {limit.strings:,} a chunk of {name} holds",
                )
        return buf


def inner_store(url: str | Path, read_only: bool) -> Any:
    """The zarr store at `url`, as `zarr.open_group(url)` would make it."""
    from zarr.storage import FsspecStore, LocalStore

    if is_local(url):
        return LocalStore(local_path(url), read_only=read_only)
    return FsspecStore.from_url(str(url), read_only=read_only)
