"""Checking a store before anything of it is read: what `store.layout.open_group` runs on every open,
so that every reader (the API, the CLI, the app's probes and patching) refuses a damaged or crafted
store in one line instead of trusting it.

A store is data from elsewhere: a collaborator's tarball, a copy, a hand edit. Zarr and numcodecs
trust its metadata (a shape is allocated, a codec is run, a fill value is cast) and read a file
whatever it is (a FIFO blocks forever, a device never ends). So, in this order:

1. `check_files`: one walk of a local store's folder refuses anything but folders and regular files
   (a symbolic link, FIFO, device or socket), before any file of it is opened;
2. `read_json`: every zarr.json is read here, capped in size, as plain JSON, before zarr parses it;
3. `check_attributes`: the group's attributes against the bounds below (which the writer keeps to
   as well); then `store.arrays.check_arrays`: every array's metadata against the schema: its shape
   (from the attributes and the number of people), chunk shape, data type, fill value and codecs,
   each from an allowlist of what the writer writes;
4. `store.chunks.CheckedStore`: zarr reads every chunk through it; it refuses a chunk larger than its
   array's chunks can be, and a zstd chunk whose frames declare more bytes than a chunk holds, before
   anything is decoded;
5. `check_coordinates`: the coordinate and label arrays, read once (they are small), against the
   attributes; the caller recomputes the fingerprint from them, so a swapped split or an edited
   label is refused.

Cached results (store.probes, store.interventions) carry a `digest` of what is stored, checked on
read: an entry edited by hand, cut by a kill or written before digests existed is computed again.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from store.errors import StoreError, first_line
from store.fileio import Unreadable, odd_entries, read_regular
from store.names import COMPRESSORS, DEFAULT_SITE, DTYPES, HOOKS, POSITIONS, SPLITS, parse_sites

# What a store may declare: far beyond any run this project makes (the paper's: 10,000 people, 6
# attributes, a few dozen layers), and small enough that what follows from them (the coordinate
# arrays, the checksums, one `acts` slice, one chunk) fits in memory. The writer refuses a layout
# beyond them (`store.layout.Layout`) and every reader a store, so a crafted number is one line
# before anything is allocated.
MAX_NAMES = 4096  # models, formats or attributes
MAX_LAYERS = 4096
MAX_HIDDEN = 1 << 16
MAX_PEOPLE = 1 << 24
MAX_CELLS = 1 << 24  # attributes x people (the labels), and resid_mid's chunks (the checksums)
MAX_SLICE = 1 << 30  # people x hidden: the vectors of one `acts` read
MAX_CHUNK_BYTES = 16 << 20  # one resid_mid chunk: 4 x the most a dump makes by default (store.layout.CHUNK_BYTES);
# --chunk-people may ask for more
MAX_META_BYTES = 16 << 20  # one zarr.json (the root's holds the run's spec and the consolidated metadata)
MAX_NAME_CHARS = 256  # a model, format, attribute or run name (they are shown in one-line messages)
MAX_STRING_BYTES = 1024  # one label text or answer: what bounds a string chunk's decoded size ...
MAX_STRING_CHUNK = 256 << 20  # ... and at most this, however many strings it holds
MAX_COORD_CHUNKS = 1 << 16  # chunks of one array besides resid_mid (the writer makes one, zarr a few)
MAX_VOCAB = 1 << 24
# What opening or reading an array may raise besides StoreError: zarr has no one error type for a
# damaged store (a group that is not there, bad JSON, a chunk that does not decode).
READ_ERRORS = (
    FileNotFoundError,
    KeyError,
    ValueError,
    RuntimeError,
    OSError,
    TypeError,
    IndexError,
    zarr.errors.BaseZarrError,
)


def damaged(url: str | Path, what: str) -> StoreError:
    """The one line for a store that is not as a dump wrote it; what it quotes of the store (a name, a
    value) has its control characters written out, so the line stays one line."""
    what = "".join(c if c.isprintable() else repr(c)[1:-1] for c in what)
    return StoreError(f"{url} is damaged ({what}); delete the store and dump again")


def is_local(url: str | Path) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def local_path(url: str | Path) -> Path:
    return Path(str(url).removeprefix("file://"))


def bounds_problem(
    models: int, formats: int, attributes: int, layers: int, hidden: int, people: int, block: int, itemsize: int
) -> str | None:
    """What of a store's dimensions is beyond the bounds above, in words; None when all are within."""
    for what, n, low, most in (
        ("models", models, 1, MAX_NAMES),
        ("formats", formats, 1, MAX_NAMES),
        ("attributes", attributes, 1, MAX_NAMES),
        ("layers", layers, 1, MAX_LAYERS),
        ("hidden", hidden, 1, MAX_HIDDEN),
        ("people", people, 1, MAX_PEOPLE),
    ):
        if not low <= n <= most:
            return f"{n:,} {what}, not {low} to {most:,}"
    if attributes * people > MAX_CELLS:
        return f"{attributes:,} attributes x {people:,} people, more than {MAX_CELLS:,} labels"
    chunks = models * formats * layers * attributes * -(-people // block)
    if chunks > MAX_CELLS:
        return f"{chunks:,} chunks of {block:,} people, more than {MAX_CELLS:,}"
    if people * hidden > MAX_SLICE:
        return f"{people:,} people x {hidden:,} hidden, more than {MAX_SLICE:,} numbers per layer and attribute"
    if block * hidden * itemsize > MAX_CHUNK_BYTES:
        return (
            f"chunks of {block:,} people x {hidden:,} hidden ({block * hidden * itemsize / 2**20:,.1f} MiB), "
            f"more than {MAX_CHUNK_BYTES >> 20} MiB"
        )
    return None


# -- 1. the files ---------------------------------------------------------------------------------
def check_files(root: Path) -> None:
    """Refuse a store whose folder holds anything but folders and regular files. Zarr and the raw
    reader open chunk files by path: a FIFO blocks them forever, a device is read until memory runs
    out, and a symbolic link reads (or, resuming a dump, writes) a file outside the store. One walk
    (the file types come with the directory listing), before anything is opened; an entry that
    vanishes meanwhile (a dump renaming its chunk files) is skipped."""
    try:
        for path, kind in odd_entries(root):
            raise damaged(root, f"{path} is {kind}, not a file a dump writes")
    except OSError as err:
        raise damaged(root, f"{err.filename} cannot be listed: {err.strerror}") from None


# -- 2. metadata as plain JSON --------------------------------------------------------------------
def _read_local(path: Path, cap: int, url: str | Path) -> bytes | None:
    """The file's bytes through the one reader (`store.fileio`: never a special file, looked at before it
    is opened, capped at `cap`); None when it does not exist."""
    try:
        return read_regular(path, cap)
    except Unreadable as err:
        if err.missing:
            return None
        raise damaged(url, f"{path} {err.why}") from None


def _read_remote(url: str, key: str, cap: int) -> bytes | None:
    import fsspec  # remote stores only

    fs, root = fsspec.core.url_to_fs(url)
    path = f"{root.rstrip('/')}/{key}"
    try:
        size = fs.size(path)
        if size is not None and size > cap:
            raise damaged(url, f"{key} has {size:,} bytes, more than the {cap:,} its kind of file may have")
        return fs.cat_file(path, start=0, end=cap + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise damaged(url, f"{key} cannot be read: {first_line(err)}") from None


def read_json(url: str | Path, key: str, cap: int = MAX_META_BYTES) -> dict | None:
    """The JSON object in the store's file `key` (a zarr.json), read here before zarr parses it:
    capped in size, never a special file. None where it does not exist; a StoreError line where it
    is not a JSON object."""
    data = _read_local(local_path(url) / key, cap, url) if is_local(url) else _read_remote(str(url), key, cap)
    if data is None:
        return None
    if len(data) > cap:
        raise damaged(url, f"{key} has more than the {cap:,} bytes its kind of file may have")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, nested beyond Python's stack
        raise damaged(url, f"{key} is not JSON: {first_line(err)}") from None
    if not isinstance(value, dict):
        raise damaged(url, f"{key} is not a JSON object")
    return value


# -- 3. attributes (the arrays' metadata: store.arrays; 4. chunks: store.chunks) -------------------
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name_ok(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and value.isprintable()


@dataclass(frozen=True)
class Attributes:
    """The group attributes the arrays' shapes follow from, checked."""

    models: tuple[str, ...]
    formats: tuple[str, ...]
    attributes: tuple[str, ...]
    layers: int
    hidden: int
    block: int
    dtype: str
    compressor: str
    sites: tuple[str, ...] = (DEFAULT_SITE,)  # a store made before sites holds resid_mid@last alone


def check_attributes(url: str | Path, meta: dict) -> Attributes:
    """The factrecall attributes of a store, each of the type and within the bounds the writer
    gives it (a `layers` of 10**9 would make every reader build a list of that length)."""

    def bad(key: str, why: str) -> StoreError:
        shown = repr(meta.get(key))
        return damaged(url, f"its attribute {key} is {shown[:80] + '…' if len(shown) > 80 else shown}: {why}")

    names = {}
    for key in ("models", "formats", "attributes"):
        value = meta.get(key)
        if not (isinstance(value, list) and 0 < len(value) <= MAX_NAMES):
            raise bad(key, f"not a list of 1 to {MAX_NAMES:,} names")
        if not all(_name_ok(v) for v in value) or len(set(value)) != len(value):
            raise bad(key, f"not distinct printable names of at most {MAX_NAME_CHARS} characters")
        names[key] = tuple(value)
    numbers = {}
    for key, most in (("layers", MAX_LAYERS), ("hidden", MAX_HIDDEN), ("chunk_people", MAX_PEOPLE)):
        value = meta.get(key)
        if not (is_int(value) and 1 <= value <= most):
            raise bad(key, f"not a whole number from 1 to {most:,}")
        numbers[key] = value
    if meta.get("dtype") not in DTYPES:
        raise bad("dtype", f"not one of {', '.join(DTYPES)}")
    if meta.get("compressor") not in COMPRESSORS:
        raise bad("compressor", f"not one of {', '.join(COMPRESSORS)}")
    if not (isinstance(meta.get("fingerprint"), str) and len(meta["fingerprint"]) <= 64):
        raise bad("fingerprint", "not the hash a dump records")
    if not (meta.get("source") is None or isinstance(meta.get("source"), dict)):
        raise bad("source", "not a mapping")
    if "run" in meta and not _name_ok(meta["run"]):
        raise bad("run", "not a run's name")
    if meta.get("vocab_size") is not None and not (is_int(meta["vocab_size"]) and 1 <= meta["vocab_size"] <= MAX_VOCAB):
        raise bad("vocab_size", f"not a whole number from 1 to {MAX_VOCAB:,}")
    sites = meta.get("sites", [DEFAULT_SITE])
    if not (isinstance(sites, list) and 0 < len(sites) <= len(HOOKS) * len(POSITIONS)):
        raise bad("sites", f"not a list of 1 to {len(HOOKS) * len(POSITIONS)} sites")
    try:
        parsed = parse_sites(sites)
    except ValueError as err:
        raise bad("sites", str(err)) from None
    if list(parsed) != sites:
        raise bad("sites", "not the sites' full names (HOOK@POSITION)")
    return Attributes(
        names["models"],
        names["formats"],
        names["attributes"],
        numbers["layers"],
        numbers["hidden"],
        numbers["chunk_people"],
        meta["dtype"],
        meta["compressor"],
        parsed,
    )


# -- 5. coordinates and labels --------------------------------------------------------------------
@dataclass(frozen=True)
class Coordinates:
    """The per-person arrays, as read once at open (the reader keeps them)."""

    people: np.ndarray  # int64 (person,)
    split: np.ndarray  # str (person,)
    label: np.ndarray  # int32 (attribute, person)
    label_text: np.ndarray  # str (attribute, person)
    answer: np.ndarray  # str (attribute, person)


def as_str(values: Any) -> np.ndarray:
    """Zarr returns strings as numpy's variable-width StringDType; plain `str` arrays are what most
    code (and pandas) expects."""
    arr = np.asarray(values)
    return np.array(arr.tolist(), dtype=str).reshape(arr.shape)


def check_coordinates(url: str | Path, group: zarr.Group, attrs: Attributes, meta: dict) -> Coordinates:
    """The coordinate and label arrays (read through the checked group, so bounded), against the
    attributes: the names the attributes list, layers 0..n-1, distinct people, splits that are
    qa_in or qa_out, labels that are token ids."""

    def read(name: str) -> np.ndarray:
        try:
            return np.asarray(group[name][...])
        except READ_ERRORS as err:
            raise damaged(url, f"its {name!r} array cannot be read: {first_line(err)}") from None

    for name, values in (("model", attrs.models), ("format", attrs.formats), ("attribute", attrs.attributes)):
        found = tuple(as_str(read(name)).tolist())
        if found != values:  # the attributes name what each index holds: they must agree
            raise damaged(url, f"its attributes list {name}s {list(values)[:8]}, its {name} array {list(found)[:8]}")
    for name, count in (("layer", attrs.layers), ("attribute_index", len(attrs.attributes))):
        if not np.array_equal(read(name), np.arange(count)):
            raise damaged(url, f"its {name} array is not 0..{count - 1}")
    people = read("person")
    if (people < 0).any() or len(np.unique(people)) != len(people):
        raise damaged(url, "its person array does not hold distinct person indices")
    split = as_str(read("split"))
    odd = sorted(set(np.unique(split).tolist()) - set(SPLITS))
    if odd:
        raise damaged(url, f"its split array holds {odd[0][:40]!r}, not {' or '.join(SPLITS)}")
    label = read("label")
    vocab = meta.get("vocab_size")
    if (label < 0).any() or (vocab is not None and (label >= vocab).any()):
        raise damaged(
            url,
            f"its label array holds {int(label.min() if (label < 0).any() else label.max())}, not a "
            f"token id{f' below its vocabulary size {vocab}' if vocab is not None else ''}",
        )
    return Coordinates(people, split, label, as_str(read("label_text")), as_str(read("answer")))


# -- cached results -------------------------------------------------------------------------------
def digest(entry: dict) -> str:
    """sha256 of a canonical JSON of a cache entry as stored (every key but `digest` itself): written
    with the entry, compared on read, so an entry edited by hand or cut short is never served."""
    body = {k: v for k, v in entry.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def digest_ok(entry: dict) -> bool:
    try:
        return entry.get("digest") == digest(entry)
    except (TypeError, ValueError, RecursionError):  # not what json.dumps writes: not what we stored
        return False


def rate(value: Any, outcomes: Any, n: int, ndigits: int | None = None) -> bool:
    """Whether `value` is the percentage of 1s among `outcomes` (a list of n 0/1 ints), as a probe or
    a patch computes it (rounded to `ndigits`): finite, within 0..100, the mean of its own outcomes,
    so within any interval resampled from them."""
    if not (
        isinstance(outcomes, list) and len(outcomes) == n and all(type(o) is int and o in (0, 1) for o in outcomes)
    ):
        return False
    if n == 0:  # no one to score: the percentage is NaN
        return isinstance(value, float) and math.isnan(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not -1e300 < value < 1e300:
        return False  # not a number, NaN, infinite, or an integer too large for a float
    mean = 100.0 * (sum(outcomes) / n)
    return abs(value - (round(mean, ndigits) if ndigits is not None else mean)) <= 1e-9 * max(1.0, abs(mean))
