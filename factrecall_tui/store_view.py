"""The Store pane: browse a run's activation store (RUN/activations.zarr) as plain Zarr.

Choose a run (only runs with a store are offered), walk its groups and arrays in a tree (the
`probes/` cache groups included), read a node's metadata (path, shape, dtype, chunks, dimension
names, chunks written, attributes) and preview a slice of an array: type a numpy-style index such as
`0, 0, 1, 3, :8, :6` (integers and slices, `...` for the dimensions left) and press Enter. Rows and
columns are labelled with the store's coordinate arrays (`person`, `model`, ... and, for a person
axis, `split` and `label_text`).

Every read of the store happens in a worker thread; zarr is imported there, never at import time.
A store that cannot be opened, or a node that cannot be read, is one line in the pane.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static, Tree
from textual.worker import get_current_worker

from factrecall_tui.runs import RunSummary

STORE_NAME = "activations.zarr"          # store.reader.STORE_NAME, without importing zarr
DEFAULT_ROWS, DEFAULT_COLS = 8, 6        # the corner shown when an array is chosen
MAX_ROWS, MAX_COLS = 200, 50             # the most a preview shows; a larger slice is cut
MAX_NODES = 5000                         # a tree larger than this is cut (a store with a huge cache)
AUX_COORDS = ("split", "label_text")     # extra row/column labels, where the array lists them as coordinates
LIST_ITEMS, STRING_CHARS, CELL_CHARS = 8, 240, 24


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


def parse_index(text: str, shape: tuple[int, ...], dims: tuple[str, ...] | None = None) -> list[int | range]:
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
        items = items[:at] + [":"] * fill + items[at + 1:]
    if len(items) > len(shape):
        raise BadIndex(f"{len(items)} entries for an array of {len(shape)} dimension{'s' * (len(shape) != 1)} "
                       f"({', '.join(dims) or 'a scalar'})")
    items += [":"] * (len(shape) - len(items))
    out: list[int | range] = []
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
        raise BadIndex(f"{len(kept)} dimensions left ({', '.join(kept)}): give an integer for all but two")
    return out


def cap(selection: list[int | range]) -> tuple[list[int | range], str]:
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


def index_text(selection: list[int | range]) -> str:
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
    corner = [":" if shape[-2] <= DEFAULT_ROWS else f":{DEFAULT_ROWS}",
              ":" if shape[-1] <= DEFAULT_COLS else f":{DEFAULT_COLS}"]
    return ", ".join(["0"] * (len(shape) - 2) + corner)


def format_value(value: Any) -> str:
    """A preview cell: numbers as numpy prints them (the shortest text that reads back to the same
    float16/float32), strings cut to CELL_CHARS."""
    if isinstance(value, str):
        return value if len(value) <= CELL_CHARS else value[: CELL_CHARS - 1] + "…"
    return str(value)


def _zarr_selection(selection: list[int | range]) -> tuple[tuple, bool]:
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


# -- what the worker finds -------------------------------------------------------------------------
@dataclass
class NodeInfo:
    path: str                                 # within the store; "" for the root group
    name: str
    kind: str                                 # group, array, or broken (its metadata unreadable)
    shape: tuple[int, ...] = ()
    dtype: str = ""
    chunks: tuple[int, ...] = ()
    dims: tuple[str, ...] | None = None       # dimension_names
    fill_value: str = ""
    codecs: str = ""
    nchunks: int = 0                          # chunks in the grid
    attrs: dict = field(default_factory=dict)
    error: str = ""
    children: int = 0


@dataclass
class Preview:
    path: str
    selection: list[int | range]
    data: Any                                 # numpy array, 0-2 dimensions (strings as str)
    rows: list[str]                           # row labels
    cols: list[str]                           # column headers
    row_dim: str
    col_dim: str
    note: str = ""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _dtype(arr) -> str:
    kind = getattr(arr.dtype, "kind", "")
    return "string" if kind in ("T", "U", "O") else str(arr.dtype)


def _array_info(arr, path: str, name: str) -> NodeInfo:
    names = arr.metadata.dimension_names
    codecs = [type(c).__name__.removesuffix("Codec") for c in (*arr.filters, arr.serializer, *arr.compressors) if c]
    return NodeInfo(path, name, "array", tuple(arr.shape), _dtype(arr), tuple(arr.chunks),
                    tuple(str(d) for d in names) if names else None, str(arr.fill_value), " · ".join(codecs),
                    int(arr.nchunks), arr.attrs.asdict())


def walk_store(root: Path) -> tuple[list[NodeInfo], list[str]]:
    """Every group and array of the Zarr v3 store at `root`, depth first (unreadable nodes, then
    arrays, the larger first, then groups), and a line per node whose metadata cannot be read. Blocking: call it in a
    worker. Raises when the root group itself cannot be opened."""
    import zarr

    # Not the consolidated metadata: it predates the probes cache, and lists what may be gone.
    group = zarr.open_group(str(root), mode="r", zarr_format=3, use_consolidated=False)
    nodes = [NodeInfo("", root.name, "group", attrs=group.attrs.asdict())]
    problems: list[str] = []

    def visit(folder: Path, prefix: str, parent: NodeInfo) -> None:
        try:
            entries = [e for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
                       and os.path.exists(os.path.join(e.path, "zarr.json"))]
        except OSError as err:
            problems.append(f"{prefix or '/'}: {_first_line(err)}")
            return
        found: list[tuple[NodeInfo, Any]] = []
        for entry in entries:
            path = prefix + entry.name
            try:
                node = group[path]
                info = (_array_info(node, path, entry.name) if isinstance(node, zarr.Array)
                        else NodeInfo(path, entry.name, "group", attrs=node.attrs.asdict()))
            except Exception as err:  # noqa: BLE001 - any unreadable node is a line, never a crash
                info = NodeInfo(path, entry.name, "broken", error=_first_line(err))
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


def read_preview(root: Path, node: NodeInfo, selection: list[int | range]) -> tuple[Preview, int | None]:
    """The selected values of an array and their labels, and how many of its chunks are written.
    Blocking: call it in a worker."""
    import numpy as np
    import zarr

    group = zarr.open_group(str(root), mode="r", zarr_format=3, use_consolidated=False)
    arr = group[node.path]
    try:
        written = int(arr.nchunks_initialized)
    except Exception:  # noqa: BLE001 - a store that cannot list its keys: not worth a message
        written = None
    selection, note = cap(selection)
    sel, orth = _zarr_selection(selection)
    data = np.asarray(arr.oindex[sel] if orth else arr[sel])
    if data.dtype.kind in ("T", "U", "O"):
        data = np.array(data.tolist(), dtype=object).reshape(data.shape)
    dims = node.dims or tuple(f"dim {i}" for i in range(len(node.shape)))
    axes = [i for i, x in enumerate(selection) if isinstance(x, range)]
    fixed = {dims[i]: x for i, x in enumerate(selection) if isinstance(x, int)}
    labels = [_labels(group, node, dims, axis, selection[axis], fixed, with_aux=(k == 0))
              for k, axis in enumerate(axes)]
    if len(axes) == 2:
        rows, cols = labels
        row_dim, col_dim = dims[axes[0]], dims[axes[1]]
    elif len(axes) == 1:
        rows, cols = labels[0], [node.name]
        row_dim, col_dim = dims[axes[0]], ""
        data = data.reshape(-1, 1)
    else:
        rows, cols, row_dim, col_dim = [""], [node.name], "", ""
        data = data.reshape(1, 1)
    return Preview(node.path, selection, data, rows, cols, row_dim, col_dim, note), written


def _labels(group, node: NodeInfo, dims: tuple[str, ...], axis: int, positions: range,
            fixed: dict[str, int], with_aux: bool) -> list[str]:
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
            if dim not in cdims or any(d != dim and d not in fixed for d in cdims) or coord.shape[cdims.index(dim)] != node.shape[axis]:
                continue
            sel = tuple(index if d == dim else fixed[d] for d in cdims)
            values = np.asarray(coord.oindex[sel]).tolist() if len(index) else []
            parts.append([format_value(v) if not isinstance(v, str) else v[:16] for v in values])
        except Exception:  # noqa: BLE001 - a missing or odd coordinate: the positions are label enough
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


def _store_signature(root: Path) -> tuple:
    """Changes when the store does (made again, a dump's flags, a probe result cached): a few stats."""
    out = []
    for p in (root, root / "zarr.json", root / "probes", root / "written" / "c"):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


# -- the pane --------------------------------------------------------------------------------------
class StorePane(Vertical):
    """Browse a run's activation store. `show(runs)` on every scan; `focus_run(name)` opens a run's store."""

    def __init__(self, *, id: str | None = None, classes: str | None = None):  # noqa: A002 - Textual's name
        super().__init__(id=id, classes=classes)
        self.runs: dict[str, Path] = {}          # every run the app knows, name -> folder
        self.store_runs: list[str] = []          # runs with a store, newest first (the Select's options)
        self.run_name: str | None = None         # the run whose store is open (or opening)
        self.root: Path | None = None
        self.nodes: dict[str, NodeInfo] = {}     # store path -> node
        self.problems: list[str] = []
        self.selected: str | None = None         # the node under the tree cursor
        self.preview: Preview | None = None
        self.chunks_written: dict[str, int | None] = {}
        self.message = ""                        # the pane's one line (plain text)
        self.index_message = ""                  # the line under the index input (plain text)
        self.info_text = ""                      # the node's metadata as shown (plain text)
        self._signature: tuple | None = None
        self._runs_generation = self._open_generation = self._read_generation = 0
        self._pending_focus: str | None = None
        self._scanned = False                    # the first scan for stores is in
        self._deferred: list[RunSummary] | None = None
        self._keep_index: dict[str, str] = {}    # node path -> the index last typed for it

    def compose(self) -> ComposeResult:
        with Horizontal(id="store-bar"):
            yield Select([], prompt="run with an activation store", id="store-run", compact=True)
        yield Static("Looking for activation stores…", id="store-message")
        with Horizontal(id="store-body"):
            yield Tree(STORE_NAME, id="store-tree")
            with Vertical(id="store-detail"):
                with VerticalScroll(id="store-info-scroll"):
                    yield Static("", id="store-info")
                with Horizontal(id="store-index-bar"):
                    yield Label("index ", id="store-index-label")
                    yield Input(placeholder="e.g. 0, 0, 1, 3, :8, :6", id="store-index", compact=True)
                yield Static("", id="store-index-message")
                yield DataTable(id="store-preview", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#store-tree", Tree).show_root = True
        if self._deferred is not None:
            runs, self._deferred = self._deferred, None
            self.show(runs)

    # -- the contract with the app -------------------------------------------------------------
    def show(self, runs: list[RunSummary]) -> None:
        """Every scan: which runs have a store (checked in a worker), and whether the open store
        changed on disk; the tree, its cursor and the preview stay as they are when nothing did."""
        if not self.is_mounted:
            self._deferred = runs
            return
        self.runs = {r.name: r.path for r in runs}
        self._runs_generation += 1
        open_root = self.root if self.run_name in self.runs else None
        self._find_stores([(r.name, r.path) for r in runs], open_root, self._runs_generation)

    def focus_run(self, name: str) -> None:
        """Open run `name`'s store, or say it has none (and open it once a later scan finds one)."""
        if name not in self.store_runs:
            self._pending_focus = name
            if self._scanned:
                self._set_message(f"{name} has no activation store yet: `factrecall-jobs dump {name}` makes one",
                                  error=True)
            return
        self._pending_focus = None
        select = self.query_one("#store-run", Select)
        if select.value != name:
            select.value = name
        self._open(name)

    # -- runs ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="store-runs", exit_on_error=False)
    def _find_stores(self, runs: list[tuple[str, Path]], open_root: Path | None, generation: int) -> None:
        found = [name for name, path in runs if (path / STORE_NAME / "zarr.json").exists()]
        signature = _store_signature(open_root) if open_root is not None else None
        if not get_current_worker().is_cancelled:
            self._post(self._apply_runs, generation, found, open_root, signature)

    def _apply_runs(self, generation: int, found: list[str], open_root: Path | None, signature: tuple | None) -> None:
        if generation != self._runs_generation:
            return
        self._scanned = True
        select = self.query_one("#store-run", Select)
        if found != self.store_runs:
            self.store_runs = found
            keep = self.run_name if self.run_name in found else None
            select.set_options([(name, name) for name in found])
            if keep is not None:
                select.value = keep
        if self.run_name is not None and self.run_name not in found:
            name = self.run_name
            self._close()
            self._set_message(f"{name}: its activation store is gone", error=True)
        pending = self._pending_focus
        if pending is not None:
            self.focus_run(pending)
        elif self.run_name is None and found:
            self.focus_run(found[0])
        elif self.run_name is None and not found:
            self._set_message("No run has an activation store yet: `factrecall-jobs run` writes one after "
                              "evaluation (`factrecall-jobs dump RUN` for an older run).")
        elif (open_root is not None and open_root == self.root and signature is not None
              and self._signature is not None and signature != self._signature):
            self._open(self.run_name, reopen=True)  # the store changed on disk: read it again, cursor kept

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str) and event.value != self.run_name:
            self._pending_focus = None
            self._open(event.value)

    # -- opening a store -----------------------------------------------------------------------
    def _open(self, name: str, reopen: bool = False) -> None:
        if name == self.run_name and not reopen:
            return
        if not reopen:
            self._keep_index = {}
            self.selected = None
        self.run_name = name
        self.root = self.runs[name] / STORE_NAME
        self._open_generation += 1
        self._set_message(f"opening {name}/{STORE_NAME}…")
        self._walk(self.root, self._open_generation)

    def _close(self) -> None:
        self.run_name = self.root = self.selected = self.preview = None
        self.nodes, self.problems, self._signature, self.chunks_written = {}, [], None, {}
        tree = self.query_one("#store-tree", Tree)
        tree.clear()
        tree.root.set_label(STORE_NAME)
        self._show_info(None)
        self._clear_preview()

    @work(thread=True, exclusive=True, group="store-open", exit_on_error=False)
    def _walk(self, root: Path, generation: int) -> None:
        signature = _store_signature(root)
        try:
            nodes, problems = walk_store(root)
            error = ""
        except Exception as err:  # noqa: BLE001 - a broken store is a message, never a crash
            nodes, problems, error = [], [], _first_line(err)
        if not get_current_worker().is_cancelled:
            self._post(self._apply_walk, generation, root, nodes, problems, error, signature)

    def _apply_walk(self, generation: int, root: Path, nodes: list[NodeInfo], problems: list[str], error: str,
                    signature: tuple) -> None:
        if generation != self._open_generation:
            return
        keep = self.selected
        name = self.run_name
        self._close()
        self.run_name, self.root, self._signature = name, root, signature
        if error:
            self._set_message(f"cannot open {name}/{STORE_NAME}: {error}", error=True)
            return
        self.nodes = {n.path: n for n in nodes}
        self.problems = problems
        tree = self.query_one("#store-tree", Tree)
        tree.root.set_label(Text(name, style="bold"))
        tree.root.data = ""
        made = {"": tree.root}
        for node in nodes[1:]:
            parent = made.get(node.path.rpartition("/")[0])
            if parent is None:
                continue
            if node.kind == "group" and node.children:
                made[node.path] = parent.add(_label(node), data=node.path, expand=node.children <= 50)
            else:
                made[node.path] = parent.add_leaf(_label(node), data=node.path)
        tree.root.expand()
        arrays = sum(n.kind == "array" for n in nodes)
        groups = sum(n.kind == "group" for n in nodes) - 1
        text = f"{name}/{STORE_NAME} · {arrays} arrays, {groups} groups"
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            self._set_message(f"{text} · unreadable: {problems[0]}{more}", error=True)
        else:
            self._set_message(text)
        target = keep if keep in made else next((n.path for n in nodes if n.kind == "array"), "")
        self._move_tree_cursor(made[target])

    def _move_tree_cursor(self, node) -> None:
        """Select `node` now; its tree line is known after the next refresh, the cursor goes there then."""
        tree = self.query_one("#store-tree", Tree)
        self._select(node.data)
        tree.call_after_refresh(tree.move_cursor, node)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        if event.node.data is not None and event.node.data != self.selected:
            self._select(event.node.data)

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        event.stop()

    # -- a node --------------------------------------------------------------------------------
    def _select(self, path: str) -> None:
        self.selected = path
        node = self.nodes.get(path)
        self._show_info(node)
        box = self.query_one("#store-index", Input)
        if node is None or node.kind != "array":
            box.value = ""
            box.disabled = True
            self._clear_preview()
            self._set_index_message("a group: choose an array to preview" if node and node.kind == "group"
                                    else (f"cannot read this node: {node.error}" if node else ""), error=bool(node and node.error))
            return
        box.disabled = False
        box.value = self._keep_index.get(path, default_index(node.shape))
        self._preview(box.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "store-index":
            self._preview(event.value)

    def _preview(self, text: str) -> None:
        node = self.nodes.get(self.selected or "")
        if node is None or node.kind != "array" or self.root is None:
            return
        try:
            selection = parse_index(text, node.shape, node.dims)
        except BadIndex as err:
            self._set_index_message(f"bad index: {err}", error=True)
            return
        self._keep_index[node.path] = text
        self._set_index_message(f"reading {node.name}[{index_text(selection)}]…")
        self._read_generation += 1
        self._read(self.root, node, selection, self._read_generation)

    @work(thread=True, exclusive=True, group="store-read", exit_on_error=False)
    def _read(self, root: Path, node: NodeInfo, selection: list[int | range], generation: int) -> None:
        try:
            preview, written = read_preview(root, node, selection)
            error = ""
        except Exception as err:  # noqa: BLE001 - a damaged chunk is a message
            preview, written, error = None, None, _first_line(err)
        if not get_current_worker().is_cancelled:
            self._post(self._apply_read, generation, node, preview, written, error)

    def _apply_read(self, generation: int, node: NodeInfo, preview: Preview | None, written: int | None,
                    error: str) -> None:
        if generation != self._read_generation or node.path != self.selected:
            return
        self.chunks_written[node.path] = written
        self._show_info(node)
        if preview is None:
            self._clear_preview()
            self._set_index_message(f"cannot read {node.name}: {error}", error=True)
            return
        self.preview = preview
        table = self.query_one("#store-preview", DataTable)
        table.clear(columns=True)
        corner = f"{preview.row_dim} ╲ {preview.col_dim}" if preview.col_dim else preview.row_dim
        table.add_column(Text(corner, style="dim"))  # fresh keys: a reused key keeps its old width
        for col in preview.cols:
            table.add_column(Text(col, style="bold"))
        for label, values in zip(preview.rows, preview.data):
            table.add_row(Text(label, style="bold"), *(Text(format_value(v), justify="right") for v in values))
        shape = "×".join(map(str, preview.data.shape)) if preview.row_dim else "1 value"
        note = f" · {preview.note}" if preview.note else ""
        self._set_index_message(f"{node.name}[{index_text(preview.selection)}] → {shape}{note}")

    def _clear_preview(self) -> None:
        self.preview = None
        self.query_one("#store-preview", DataTable).clear(columns=True)

    # -- text ----------------------------------------------------------------------------------
    def _show_info(self, node: NodeInfo | None) -> None:
        widget = self.query_one("#store-info", Static)
        if node is None:
            self.info_text = ""
            widget.update("")
            return
        lines: list[tuple[str, str]] = [("path", "/" + node.path), ("kind", node.kind)]
        if node.kind == "array":
            written = self.chunks_written.get(node.path)
            lines += [
                ("shape", str(node.shape)),
                ("dims", " × ".join(node.dims) if node.dims else "(none)"),
                ("dtype", node.dtype),
                ("chunks", f"{node.chunks} · " + (f"{written} of {node.nchunks} written" if written is not None
                                                  else f"{node.nchunks} in the grid")),
                ("fill value", node.fill_value),
                ("codecs", node.codecs or "(none)"),
            ]
        elif node.kind == "group":
            lines.append(("members", str(node.children)))
        else:
            lines.append(("error", node.error))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for key, value in lines:
            grid.add_row(key, Text(value, style="red" if key == "error" else ""))
        attrs = json.dumps(clip(node.attrs), indent=2, ensure_ascii=False, default=str) if node.attrs else "{}"
        self.info_text = "\n".join(f"{k}: {v}" for k, v in lines) + "\nattributes\n" + attrs
        widget.update(Group(grid, Text("attributes", style="bold"), JSONHighlighter()(Text(attrs))))
        self.query_one("#store-info-scroll", VerticalScroll).scroll_home(animate=False)

    def _set_message(self, text: str, error: bool = False) -> None:
        self.message = text
        self.query_one("#store-message", Static).update(Text(text, style="red" if error else "dim"))

    def _set_index_message(self, text: str, error: bool = False) -> None:
        self.index_message = text
        self.query_one("#store-index-message", Static).update(Text(text, style="red" if error else "dim"))

    def _post(self, callback, *args) -> None:
        try:
            self.app.call_from_thread(callback, *args)
        except RuntimeError:  # the app is closing
            pass


def _label(node: NodeInfo) -> Text:
    if node.kind == "broken":
        return Text(f"⚠ {node.name}", style="red")
    if node.kind == "group":
        settings = node.attrs.get("settings")
        if isinstance(settings, dict) and "model" in node.attrs:  # a cached probe result (store.probes)
            label = Text(f"{node.attrs['model']} · {settings.get('attribute', '?')} · {settings.get('bio', '?')} ")
            return label.append(node.name, style="dim")
        return Text(f"{node.name}/", style="bold")
    label = Text(node.name)
    label.append(f" {'×'.join(map(str, node.shape)) or 'scalar'} {node.dtype}", style="dim")
    return label
