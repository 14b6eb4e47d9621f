"""The Store pane: browse a run's activation store (RUN/activations.zarr) as plain Zarr, and the
snapshot store of a run trained with `train.snapshots` (RUN/trajectory.zarr: offered as "RUN · snapshots").

Choose a run (only runs with a store are offered), walk its groups and arrays in a tree (the
`probes/` cache groups included), read a node's metadata (path, shape, dtype, chunks, dimension
names, chunks written, attributes) and preview a slice of an array: type a numpy-style index such as
`0, 0, 1, 3, :8, :6` (integers and slices, `...` for the dimensions left) and press Enter. Rows and
columns are labelled with the store's coordinate arrays (`person`, `model`, ... and, for a person
axis, `split` and `label_text`). The line under the store's summary lists its capture sites, each
with its array (`resid_mid@last` is `resid_mid`, `mlp_out@subject_last` its own name); every site's
array is browsed alike, its metadata naming its site.

The reading itself is factrecall_tui/store_browse.py, and how a node is worded
factrecall_tui/store_text.py (no Textual in either). Every read of the store happens in a worker
thread, which posts what it found as a message; zarr is imported there, never at import time. A
store that cannot be opened, or a node that cannot be read, is one line in the pane. Everything a
store says (node names, attributes, labels, strings in arrays, errors quoting them) is shown as
text, never markup, with its control characters written out (`jobs.shown.visible`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import get_current_worker

from factrecall_tui.pane import HandsFailuresUp, when_mounted
from factrecall_tui.quiet import DataTable, Line
from factrecall_tui.runs import RunSummary
from factrecall_tui.store_browse import (
    BadIndex,
    NodeInfo,
    Preview,
    Selection,
    Signature,
    default_index,
    format_value,
    index_text,
    parse_index,
    read_preview,
    store_signature,
    store_sites,
    walk_store,
)
from factrecall_tui.store_text import node_info, node_label, sites_line
from jobs.shown import visible
from store.errors import StoreError
from store.names import STORE_NAME, TRAJECTORY_NAME

SNAPSHOTS = " · snapshots"  # how the run menu names a run's trajectory store


def store_of(key: str) -> tuple[str, str]:
    """(run, store folder name) for an entry of the run menu: `RUN` or `RUN · snapshots`."""
    return (key.removesuffix(SNAPSHOTS), TRAJECTORY_NAME) if key.endswith(SNAPSHOTS) else (key, STORE_NAME)


class StorePane(HandsFailuresUp, Vertical):
    """Browse a run's activation store. `show(runs)` on every scan; `focus_run(name)` opens a run's store."""

    # What the workers found, each for the request numbered `generation` (a later request's answer
    # makes an earlier one stale).
    @dataclass
    class StoresFound(Message, bubble=False):
        generation: int
        found: list[str]  # the runs with a store, newest first
        open_root: Path | None  # the open store, if its run is still there
        signature: Signature | None  # the open store's signature now

    @dataclass
    class Walked(Message, bubble=False):
        generation: int
        root: Path
        nodes: list[NodeInfo]
        problems: list[str]
        error: str  # why the store cannot be opened ("" when it can)
        signature: Signature

    @dataclass
    class PreviewRead(Message, bubble=False):
        generation: int
        node: NodeInfo
        preview: Preview | None
        written: int | None  # the array's chunks written, where the store says
        error: str  # why the slice cannot be read ("" when it can)

    def __init__(self, *, id: str | None = None, classes: str | None = None):  # noqa: A002 - Textual's name
        super().__init__(id=id, classes=classes)
        self.runs: dict[str, Path] = {}  # every run the app knows, name -> folder
        self.store_runs: list[str] = []  # runs with a store, newest first (the Select's options)
        self.run_name: str | None = None  # the store open (or opening): RUN, or RUN · snapshots
        self.root: Path | None = None
        self.nodes: dict[str, NodeInfo] = {}  # store path -> node
        self.problems: list[str] = []
        self.sites: list[tuple[str, str]] = []  # the store's capture sites, each with its array's name
        self.sites_text = ""  # the line listing them (plain text; "" for a store without sites)
        self.selected: str | None = None  # the node under the tree cursor
        self.preview: Preview | None = None
        self.chunks_written: dict[str, int | None] = {}
        self.message = ""  # the pane's one line (plain text)
        self.index_message = ""  # the line under the index input (plain text)
        self.info_text = ""  # the node's metadata as shown (plain text)
        self._signature: Signature | None = None
        self._runs_generation = self._open_generation = self._read_generation = 0
        self._pending_focus: str | None = None
        self._scanned = False  # the first scan for stores is in
        self._keep_index: dict[str, str] = {}  # node path -> the index last typed for it

    def compose(self) -> ComposeResult:
        with Horizontal(id="store-bar"):
            yield Select([], prompt="run with an activation store", id="store-run", compact=True)
        yield Line("Looking for activation stores…", id="store-message")
        yield Line("", id="store-sites")
        with Horizontal(id="store-body"):
            yield Tree(STORE_NAME, id="store-tree")
            with Vertical(id="store-detail"):
                with VerticalScroll(id="store-info-scroll"):
                    yield Line("", id="store-info")
                with Horizontal(id="store-index-bar"):
                    yield Label("index ", id="store-index-label")
                    yield Input(placeholder="e.g. 0, 0, 1, 3, :8, :6", id="store-index", compact=True)
                yield Line("", id="store-index-message")
                yield DataTable(id="store-preview", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#store-tree", Tree).show_root = True
        self._show_sites([])

    # -- the contract with the app -------------------------------------------------------------
    @when_mounted
    def show(self, runs: list[RunSummary]) -> None:
        """Every scan: which runs have a store (checked in a worker), and whether the open store
        changed on disk; the tree, its cursor and the preview stay as they are when nothing did."""
        self.runs = {r.name: r.path for r in runs}
        self._runs_generation += 1
        open_root = self.root if self.run_name is not None and store_of(self.run_name)[0] in self.runs else None
        self._find_stores([(r.name, r.path) for r in runs], open_root, self._runs_generation)

    @when_mounted
    def focus_run(self, name: str) -> None:
        """Open run `name`'s store, or say it has none (and open it once a later scan finds one)."""
        if name not in self.store_runs and name + SNAPSHOTS in self.store_runs:
            name += SNAPSHOTS  # a run with snapshots and no activation store (yet): its trajectory
        if name not in self.store_runs:
            self._pending_focus = name
            if self._scanned:
                self._set_message(
                    f"{name} has no activation store yet: `factrecall-jobs dump {name}` makes one", error=True
                )
            return
        self._pending_focus = None
        select = self.query_one("#store-run", Select)
        if select.value != name:
            select.value = name
        self._open(name)

    # -- runs ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="store-runs", exit_on_error=False)
    def _find_stores(self, runs: list[tuple[str, Path]], open_root: Path | None, generation: int) -> None:
        found = [
            key
            for name, path in runs
            for key, store in ((name, STORE_NAME), (name + SNAPSHOTS, TRAJECTORY_NAME))
            if (path / store / "zarr.json").exists()
        ]
        signature = store_signature(open_root) if open_root is not None else None
        if not get_current_worker().is_cancelled:
            self.post_message(self.StoresFound(generation, found, open_root, signature))

    @on(StoresFound)
    def _apply_runs(self, message: StoresFound) -> None:
        if message.generation != self._runs_generation:
            return
        found, open_root, signature = message.found, message.open_root, message.signature
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
            self._set_message(
                "No run has an activation store yet: `factrecall-jobs run` writes one after "
                "evaluation (`factrecall-jobs dump RUN` for an older run)."
            )
        elif (
            open_root is not None
            and open_root == self.root
            and signature is not None
            and self._signature is not None
            and signature != self._signature
        ):
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
        run, store = store_of(name)
        self.root = self.runs[run] / store
        self._open_generation += 1
        self._set_message(f"opening {run}/{store}…")
        self._walk(self.root, self._open_generation)

    def _close(self) -> None:
        self.run_name = self.root = self.selected = self.preview = None
        self.nodes, self.problems, self._signature, self.chunks_written = {}, [], None, {}
        self._show_sites([])
        tree = self.query_one("#store-tree", Tree)
        tree.clear()
        tree.root.set_label(STORE_NAME)
        self._show_info(None)
        self._clear_preview()

    @work(thread=True, exclusive=True, group="store-open", exit_on_error=False)
    def _walk(self, root: Path, generation: int) -> None:
        signature = store_signature(root)
        try:
            nodes, problems = walk_store(root)
            error = ""
        except StoreError as err:  # a broken store is a message
            nodes, problems, error = [], [], str(err)
        if not get_current_worker().is_cancelled:
            self.post_message(self.Walked(generation, root, nodes, problems, error, signature))

    @on(Walked)
    def _apply_walk(self, message: Walked) -> None:
        if message.generation != self._open_generation:
            return
        root, nodes, problems, error = message.root, message.nodes, message.problems, message.error
        keep = self.selected
        name = self.run_name
        self._close()
        self.run_name, self.root, self._signature = name, root, message.signature
        if error:
            self._set_message(f"cannot open {store_of(name)[0]}/{root.name}: {error}", error=True)
            return
        self.nodes = {n.path: n for n in nodes}
        self.problems = problems
        self._show_sites(store_sites(nodes[0].attrs))
        tree = self.query_one("#store-tree", Tree)
        tree.root.set_label(Text(visible(name), style="bold"))
        tree.root.data = ""
        made = {"": tree.root}
        for node in nodes[1:]:
            parent = made.get(node.path.rpartition("/")[0])
            if parent is None:
                continue
            if node.kind == "group" and node.children:
                made[node.path] = parent.add(node_label(node), data=node.path, expand=node.children <= 50)
            else:
                made[node.path] = parent.add_leaf(node_label(node), data=node.path)
        tree.root.expand()
        arrays = sum(n.kind == "array" for n in nodes)
        groups = sum(n.kind == "group" for n in nodes) - 1
        text = f"{store_of(name)[0]}/{root.name} · {arrays} arrays, {groups} groups"
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            self._set_message(f"{text} · unreadable: {problems[0]}{more}", error=True)
        else:
            self._set_message(text)
        target = keep if keep in made else next((n.path for n in nodes if n.kind == "array"), "")
        self._move_tree_cursor(made[target])

    def _move_tree_cursor(self, node: TreeNode[str]) -> None:
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
            self._set_index_message(
                "a group: choose an array to preview"
                if node and node.kind == "group"
                else (f"cannot read this node: {node.error}" if node else ""),
                error=bool(node and node.error),
            )
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
    def _read(self, root: Path, node: NodeInfo, selection: Selection, generation: int) -> None:
        try:
            preview, written = read_preview(root, node, selection)
            error = ""
        except StoreError as err:  # a damaged chunk is a message
            preview, written, error = None, None, str(err)
        if not get_current_worker().is_cancelled:
            self.post_message(self.PreviewRead(generation, node, preview, written, error))

    @on(PreviewRead)
    def _apply_read(self, message: PreviewRead) -> None:
        node, preview = message.node, message.preview
        if message.generation != self._read_generation or node.path != self.selected:
            return
        self.chunks_written[node.path] = message.written
        self._show_info(node)
        if preview is None:
            self._clear_preview()
            self._set_index_message(f"cannot read {node.name}: {message.error}", error=True)
            return
        self.preview = preview
        table = self.query_one("#store-preview", DataTable)
        table.clear(columns=True)
        corner = f"{preview.row_dim} ╲ {preview.col_dim}" if preview.col_dim else preview.row_dim
        table.add_column(Text(visible(corner), style="dim"))  # fresh keys: a reused key keeps its old width
        cols = [visible(col) for col in preview.cols]  # the store's words: control characters written out
        for col in cols:
            table.add_column(Text(col, style="bold"))
        # Numbers right-aligned by padding, not `justify`: a justified Text goes through rich's line
        # wrapping each time a cell is drawn (about ten times the cost of the cell).
        cells = [[visible(format_value(v)) for v in values] for values in preview.data]
        widths = [max([cell_len(col), *(cell_len(row[j]) for row in cells)]) for j, col in enumerate(cols)]
        for label, row in zip(preview.rows, cells):
            table.add_row(
                Text(visible(label), style="bold"), *(Text(" " * (w - cell_len(v)) + v) for v, w in zip(row, widths))
            )
        shape = "×".join(map(str, preview.data.shape)) if preview.row_dim else "1 value"
        note = f" · {preview.note}" if preview.note else ""
        where = "".join(f" · {dim} {label}" for dim, label in preview.fixed.items())
        self._set_index_message(f"{node.name}[{index_text(preview.selection)}] → {shape}{where}{note}")

    def _clear_preview(self) -> None:
        self.preview = None
        self.query_one("#store-preview", DataTable).clear(columns=True)

    # -- text ----------------------------------------------------------------------------------
    def _show_info(self, node: NodeInfo | None) -> None:
        """The node's metadata and attributes (factrecall_tui/store_text.py), or nothing."""
        widget = self.query_one("#store-info", Static)
        if node is None:
            self.info_text = ""
            widget.update("")
            return
        site = next((site for site, array in self.sites if array == node.path and node.kind == "array"), None)
        self.info_text, shown = node_info(node, self.chunks_written.get(node.path), site)
        widget.update(shown)
        self.query_one("#store-info-scroll", VerticalScroll).scroll_home(animate=False)

    def _show_sites(self, sites: list[tuple[str, str]]) -> None:
        """The line under the summary listing the store's sites and their arrays (none: no line)."""
        self.sites = sites
        self.sites_text = sites_line(sites).plain if sites else ""
        line = self.query_one("#store-sites", Line)
        line.update(sites_line(sites) if sites else "")
        line.display = bool(sites)

    def _set_message(self, text: str, error: bool = False) -> None:
        self.message = visible(text)
        self.query_one("#store-message", Static).update(Text(self.message, style="red" if error else "dim"))

    def _set_index_message(self, text: str, error: bool = False) -> None:
        self.index_message = visible(text)
        self.query_one("#store-index-message", Static).update(Text(self.index_message, style="red" if error else "dim"))
