"""Browsing an activation store as plain Zarr, without Textual: the Store pane's data side.

- the index a researcher types (`0, 0, 1, 3, :8, :6`: integers and slices, one `...`), parsed without
  eval into one entry per dimension, capped to what a preview shows, and written back canonically;
- every group and array of a store (`walk_store`), each as a `NodeInfo`, with a line per node whose
  metadata cannot be read;
- a slice of an array with its rows and columns labelled by the store's coordinate arrays
  (`read_preview`: `person`, `model`, ... and, for a person axis, `split` and `label_text`);
- the capture sites a store holds, each with its array (`store_sites`: `resid_mid@last` is
  `resid_mid`, `mlp_out@subject_last` its own name), from the root group's attributes.

zarr and numpy are imported by the functions that read, never at import time (the app's first frame
needs neither). A store that cannot be opened or read raises `StoreError` with one line to show.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.errors import first_line
from store.errors import StoreError
from store.names import ATTRS_KEY, DEFAULT_SITE, array_name

if TYPE_CHECKING:
    import numpy as np
    import zarr

DEFAULT_ROWS, DEFAULT_COLS = 8, 6  # the corner shown when an array is chosen
MAX_ROWS, MAX_COLS = 200, 50  # the most a preview shows; a larger slice is cut
MAX_NODES = 5000  # a tree larger than this is cut (a store with a huge cache)
AUX_COORDS = ("split", "label_text")  # extra row/column labels, where the array lists them as coordinates
LIST_ITEMS, STRING_CHARS, CELL_CHARS = 8, 240, 24

Selection = list[int | range]  # one entry per dimension: a position, or the positions a slice picks
Signature = tuple[tuple[int, int] | None, ...]


class BadIndex(ValueError):
    """An index the preview cannot take; the message is one line."""


# -- the index -------------------------------------------------------------------------------------
_INT = re.compile(r"^[+-]?\d+$")


def _int(token: str, what: str) -> int | None:
    token = token.strip()
    if token == "":
        return None
    if not _INT.match(token):
        raise BadIndex(f"{what} {token!r} is not an integer")
    return int(token)


def parse_index(text: str, shape: tuple[int, ...], dims: tuple[str, ...] | None = None) -> Selection:
    """`0, 0, 3, 1, :8, :6` -> one entry per dimension: an int (in bounds, made non-negative) or the
    range of positions a slice picks. Integers, `start:stop:step` slices, one `...`; fewer entries
    than dimensions mean `:` for the rest. No eval: anything else is a `BadIndex`."""
    dims = dims or tuple(f"dim {i}" for i in range(len(shape)))
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    items = [t.strip() for t in body.split(",")] if body.strip() else []
    if items and items[-1] == "":  # a trailing comma, as in `3,`
        items.pop()
    if "" in items:
        raise BadIndex("an empty entry between commas: use : for a whole dimension")
    if items.count("...") > 1:
        raise BadIndex("at most one ... in an index")
    if "..." in items:
        at = items.index("...")
        fill = len(shape) - (len(items) - 1)
        if fill < 0:
            raise BadIndex(f"{len(items) - 1} entries for an array of {len(shape)} dimensions")
        items = items[:at] + [":"] * fill + items[at + 1 :]
    if len(items) > len(shape):
        raise BadIndex(
            f"{len(items)} entries for an array of {len(shape)} dimension{'s' * (len(shape) != 1)} "
            f"({', '.join(dims) or 'a scalar'})"
        )
    items += [":"] * (len(shape) - len(items))
    out: Selection = []
    for item, n, dim in zip(items, shape, dims):
        if ":" in item:
            parts = item.split(":")
            if len(parts) > 3:
                raise BadIndex(f"{item!r} is not a slice (start:stop:step)")
            start, stop = _int(parts[0], "start"), _int(parts[1], "stop")
            step = _int(parts[2], "step") if len(parts) == 3 else None
            if step == 0:
                raise BadIndex(f"{item!r}: a slice step cannot be zero")
            out.append(range(*slice(start, stop, step).indices(n)))
        else:
            i = _int(item, "index")
            if not -n <= i < n:
                raise BadIndex(f"index {i} is out of bounds for {dim} (size {n})")
            out.append(i % n)
    if sum(isinstance(x, range) for x in out) > 2:
        kept = [d for d, x in zip(dims, out) if isinstance(x, range)]
        example = ", ".join(["0"] * (len(out) - 2) + [":8", ":6"])
        raise BadIndex(
            f"give an integer for all but two dimensions, e.g. {example} ({len(kept)} are left open: "
            f"{', '.join(kept)}; `...` stands for ':' in each)"
        )
    return out


def cap(selection: Selection) -> tuple[Selection, str]:
    """The selection with its rows cut to MAX_ROWS and columns to MAX_COLS, and a note saying so."""
    out, notes = [], []
    axes = [i for i, x in enumerate(selection) if isinstance(x, range)]
    limits = dict(zip(axes, (MAX_ROWS, MAX_COLS) if len(axes) == 2 else (MAX_ROWS,)))
    for i, x in enumerate(selection):
        if isinstance(x, range) and len(x) > limits[i]:
            notes.append(f"first {limits[i]} of {len(x)} {'rows' if limits[i] == MAX_ROWS else 'columns'}")
            x = x[: limits[i]]
        out.append(x)
    return out, ", ".join(notes)


def index_text(selection: Selection) -> str:
    """The canonical text of a selection: `0, 0, 1, 3, 0:8, 0:6`."""

    def one(x: int | range) -> str:
        if isinstance(x, int):
            return str(x)
        if len(x) == 0:
            return f"{x.start}:{x.start}"
        stop = x[-1] + (1 if x.step > 0 else -1)
        text = f"{x.start}:{'' if stop < 0 else stop}"
        return text + (f":{x.step}" if x.step != 1 else "")

    return ", ".join(one(x) for x in selection)


def default_index(shape: tuple[int, ...]) -> str:
    """A small corner: 0 for every dimension but the last two; the first DEFAULT_ROWS x DEFAULT_COLS."""
    if not shape:
        return ""
    if len(shape) == 1:
        return ":" if shape[0] <= 20 else ":20"
    corner = [
        ":" if shape[-2] <= DEFAULT_ROWS else f":{DEFAULT_ROWS}",
        ":" if shape[-1] <= DEFAULT_COLS else f":{DEFAULT_COLS}",
    ]
    return ", ".join(["0"] * (len(shape) - 2) + corner)


def format_value(value: Any) -> str:
    """A preview cell: numbers as numpy prints them (the shortest text that reads back to the same
    float16/float32), strings cut to CELL_CHARS."""
    if isinstance(value, str):
        return value if len(value) <= CELL_CHARS else value[: CELL_CHARS - 1] + "…"
    return str(value)


def _zarr_selection(selection: Selection) -> tuple[tuple, bool]:
    """(selection for zarr, whether it needs orthogonal indexing: a negative step)."""
    orth = any(isinstance(x, range) and x.step < 0 for x in selection)
    import numpy as np

    def one(x: int | range):
        if isinstance(x, int):
            return x
        if orth:
            return np.asarray(x, dtype=np.int64)
        return slice(x.start, x.start if len(x) == 0 else x[-1] + 1, x.step)

    return tuple(one(x) for x in selection), orth


# -- what a walk and a read find ---------------------------------------------------------------------
@dataclass
class NodeInfo:
    path: str  # within the store; "" for the root group
    name: str
    kind: str  # group, array, or broken (its metadata unreadable)
    shape: tuple[int, ...] = ()
    dtype: str = ""
    chunks: tuple[int, ...] = ()
    dims: tuple[str, ...] | None = None  # dimension_names
    fill_value: str = ""
    codecs: str = ""
    nchunks: int = 0  # chunks in the grid
    attrs: dict = field(default_factory=dict)
    error: str = ""
    children: int = 0


@dataclass
class Preview:
    path: str
    selection: Selection
    data: np.ndarray  # 2 dimensions (rows, columns); strings as str objects
    rows: list[str]  # row labels
    cols: list[str]  # column headers
    row_dim: str
    col_dim: str
    note: str = ""
    fixed: dict[str, str] = field(default_factory=dict)  # each dimension the index fixes -> its label there


def store_sites(attrs: dict) -> list[tuple[str, str]]:
    """The sites a factrecall store's root attributes say it holds, each with its array's name
    (`store.names.array_name`): [("resid_mid@last", "resid_mid"), ("mlp_out@subject_last",
    "mlp_out@subject_last")]. A store made before sites holds resid_mid@last alone; a Zarr store that
    is not factrecall's, none. The store's words: shown as text, never trusted as more."""
    meta = attrs.get(ATTRS_KEY)
    if not isinstance(meta, dict):
        return []
    sites = meta.get("sites", [DEFAULT_SITE])
    if not isinstance(sites, list):
        return []
    return [(site, array_name(site)) for site in sites if isinstance(site, str)]


def site_arrays(attrs: dict) -> dict[str, str]:
    """Array name -> its site, for the sites of `store_sites`."""
    return {array: site for site, array in store_sites(attrs)}


def _dtype(arr: zarr.Array) -> str:
    kind = getattr(arr.dtype, "kind", "")
    return "string" if kind in ("T", "U", "O") else str(arr.dtype)


def _array_info(arr: zarr.Array, path: str, name: str) -> NodeInfo:
    names = arr.metadata.dimension_names
    codecs = [type(c).__name__.removesuffix("Codec") for c in (*arr.filters, arr.serializer, *arr.compressors) if c]
    return NodeInfo(
        path,
        name,
        "array",
        tuple(arr.shape),
        _dtype(arr),
        tuple(arr.chunks),
        tuple(str(d) for d in names) if names else None,
        str(arr.fill_value),
        " · ".join(codecs),
        int(arr.nchunks),
        arr.attrs.asdict(),
    )


def _open(root: Path) -> zarr.Group:
    """The store's root group, read-only. zarr has no one error type for a damaged store (bad JSON, a
    missing key, a codec it does not know): each is this store's damage, a `StoreError` of one line.
    First the walk every store reader does (`store.validate.check_files`): zarr opens files by path,
    and a FIFO or a device in the store would block the worker for good. (The rest of the checks
    `store.open` makes are not here: the browser shows any Zarr store, damaged nodes included.)"""
    import zarr

    from store.validate import check_files

    check_files(root)
    try:
        # Not the consolidated metadata: it predates the probes cache, and lists what may be gone.
        return zarr.open_group(str(root), mode="r", zarr_format=3, use_consolidated=False)
    except Exception as err:  # noqa: BLE001 - see the docstring: any failure here is the store's damage
        raise StoreError(first_line(err, with_type=True)) from err


def walk_store(root: Path) -> tuple[list[NodeInfo], list[str]]:
    """Every group and array of the Zarr v3 store at `root`, depth first (unreadable nodes, then
    arrays, the larger first, then groups), and a line per node whose metadata cannot be read.
    Blocking: call it in a worker. Raises `StoreError` when the root group itself cannot be opened."""
    import zarr

    group = _open(root)
    nodes = [NodeInfo("", root.name, "group", attrs=group.attrs.asdict())]
    problems: list[str] = []

    def visit(folder: Path, prefix: str, parent: NodeInfo) -> None:
        try:
            entries = [
                e
                for e in os.scandir(folder)
                if e.is_dir() and not e.name.startswith(".") and os.path.exists(os.path.join(e.path, "zarr.json"))
            ]
        except OSError as err:
            problems.append(f"{prefix or '/'}: {first_line(err, with_type=True)}")
            return
        found: list[tuple[NodeInfo, os.DirEntry]] = []
        for entry in entries:
            path = prefix + entry.name
            try:
                node = group[path]
                info = (
                    _array_info(node, path, entry.name)
                    if isinstance(node, zarr.Array)
                    else NodeInfo(path, entry.name, "group", attrs=node.attrs.asdict())
                )
            except Exception as err:  # noqa: BLE001 - data handling: a damaged node is a line in the tree, whatever zarr raised
                info = NodeInfo(path, entry.name, "broken", error=first_line(err, with_type=True))
                problems.append(f"{path}: {info.error}")
            found.append((info, entry))
        # Unreadable nodes first (they need attention), then arrays (the larger first), then groups.
        found.sort(key=lambda f: (f[0].kind == "group", f[0].kind != "broken", -len(f[0].shape), f[0].name))
        parent.children = len(found)
        for info, entry in found:
            if len(nodes) >= MAX_NODES:
                problems.append(f"more than {MAX_NODES} nodes: the tree is cut")
                return
            nodes.append(info)
            if info.kind == "group":
                visit(Path(entry.path), info.path + "/", info)

    visit(root, "", nodes[0])
    return nodes, problems


def read_preview(root: Path, node: NodeInfo, selection: Selection) -> tuple[Preview, int | None]:
    """The selected values of an array and their labels, and how many of its chunks are written.
    Blocking: call it in a worker. Raises `StoreError` where the store cannot be read (a damaged
    chunk, a node gone since the walk)."""
    group = _open(root)
    try:
        return _read_preview(group, node, selection)
    except Exception as err:  # noqa: BLE001 - as in _open: whatever zarr or a codec raises, it is this store's damage
        raise StoreError(first_line(err, with_type=True)) from err


def _read_preview(group: zarr.Group, node: NodeInfo, selection: Selection) -> tuple[Preview, int | None]:
    import numpy as np

    arr = group[node.path]
    try:
        written = int(arr.nchunks_initialized)
    except Exception:  # noqa: BLE001 - data handling: a store that cannot list its keys: not worth a message
        written = None
    selection, note = cap(selection)
    sel, orth = _zarr_selection(selection)
    data = np.asarray(arr.oindex[sel] if orth else arr[sel])
    if data.dtype.kind in ("T", "U", "O"):
        data = np.array(data.tolist(), dtype=object).reshape(data.shape)
    elif node.path in site_arrays(group.attrs.asdict()) and data.dtype.kind == "f" and np.isnan(data).any():
        # NaN is how the store marks a vector not written; `store.open(...).acts` refuses such a slice.
        note = "; ".join(
            filter(None, [note, "NaN: not written yet, or a chunk missing or damaged (the API refuses to read it)"])
        )
    dims = node.dims or tuple(f"dim {i}" for i in range(len(node.shape)))
    axes = [i for i, x in enumerate(selection) if isinstance(x, range)]
    fixed = {dims[i]: x for i, x in enumerate(selection) if isinstance(x, int)}
    names = [labels(group, node, dims, axis, selection[axis], fixed, with_aux=(k == 0)) for k, axis in enumerate(axes)]
    if len(axes) == 2:
        rows, cols = names
        row_dim, col_dim = dims[axes[0]], dims[axes[1]]
    elif len(axes) == 1:
        rows, cols = names[0], [node.name]
        row_dim, col_dim = dims[axes[0]], ""
        data = data.reshape(-1, 1)
    else:
        rows, cols, row_dim, col_dim = [""], [node.name], "", ""
        data = data.reshape(1, 1)
    return Preview(node.path, selection, data, rows, cols, row_dim, col_dim, note, _fixed_labels(group, fixed)), written


def _fixed_labels(group: zarr.Group, fixed: dict[str, int]) -> dict[str, str]:
    """What the index fixes, in the store's words: `model` 3 is `mix` where a `model` coordinate array
    names it (else the position itself)."""
    import numpy as np

    out = {}
    for dim, position in fixed.items():
        try:
            coord = group[dim]
            out[dim] = str(np.asarray(coord[position]).item()) if coord.ndim == 1 else str(position)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):  # no readable coordinate array
            out[dim] = str(position)
    return out


def labels(
    group: zarr.Group,
    node: NodeInfo,
    dims: tuple[str, ...],
    axis: int,
    positions: range,
    fixed: dict[str, int],
    with_aux: bool,
) -> list[str]:
    """Labels of the positions along one axis: the coordinate array of that dimension (a 1-d array
    named after it), and for rows the auxiliary coordinates the array lists (split, label_text)
    whose other dimensions the index fixes."""
    import numpy as np

    dim = dims[axis]
    parts: list[list[str]] = [[str(p) for p in positions]] if dim == node.path else []
    index = np.asarray(positions, dtype=np.int64)
    names = [dim] if dim != node.path else []
    if with_aux:
        listed = str(node.attrs.get("coordinates", "")).split()
        names += [n for n in AUX_COORDS if n in listed]
    for name in names:
        try:
            coord = group[name]
            cdims = tuple(coord.metadata.dimension_names or ())
            if (
                dim not in cdims
                or any(d != dim and d not in fixed for d in cdims)
                or coord.shape[cdims.index(dim)] != node.shape[axis]
            ):
                continue
            sel = tuple(index if d == dim else fixed[d] for d in cdims)
            values = np.asarray(coord.oindex[sel]).tolist() if len(index) else []
            parts.append([format_value(v) if not isinstance(v, str) else v[:16] for v in values])
        except Exception:  # noqa: BLE001 - data handling: a missing or damaged coordinate: the positions are label enough
            continue
    if not parts:
        parts = [[str(p) for p in positions]]
    return [" · ".join(p) for p in zip(*parts)]


def clip(obj: Any) -> Any:
    """Attributes for display: lists longer than LIST_ITEMS and strings longer than STRING_CHARS cut."""
    if isinstance(obj, dict):
        return {k: clip(v) for k, v in obj.items()}
    if isinstance(obj, list):
        head = [clip(v) for v in obj[:LIST_ITEMS]]
        return head + ([f"… {len(obj) - LIST_ITEMS} more"] if len(obj) > LIST_ITEMS else [])
    if isinstance(obj, str) and len(obj) > STRING_CHARS:
        return obj[:STRING_CHARS] + f"… ({len(obj)} characters)"
    return obj


def store_signature(root: Path) -> Signature:
    """Changes when the store does (made again, a dump's flags, a probe result cached): a few stats."""
    out: list[tuple[int, int] | None] = []
    for p in (root, root / "zarr.json", root / "probes", root / "written" / "c"):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)
