"""The Probes screen's second view (`i`): the interventions the chosen runs' stores hold, the same
numbers as `factrecall-jobs patch` prints (store.interventions).

Probes say where an attribute can be read; these say whether the model uses it: resid_mid at one
layer and the last prompt token replaced (the same person's hBIO_long or hBIO_short into the QA pass,
hQA into the BIO pass, the controls) or the attribute erased (LEACE), and exact match per layer. The
view reads what the stores have cached, in a worker thread (zarr loads there). Computing runs a model,
which the app leaves to a process: `p` runs `factrecall-jobs patch RUNS --attribute A` (what the
caption names when a store has none; `reproduce` does it for job) and reads its results when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message

from factrecall_tui.quiet import DataTable, Line
from jobs.shown import visible

MODELS = ("stage", "mix")


@dataclass(frozen=True)
class PatchTable:
    """What the view shows: a caption, the column labels and the rows (model, layer, cells)."""

    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def read(names: tuple[str, ...], paths: tuple[str, ...], attribute: str) -> PatchTable:
    """The patching results cached for `attribute` in every run's store (the newest over every layer
    and every QA-out person), as the CLI tabulates them; a caption saying what to run where one lacks them."""
    import store
    from store.interventions import COLUMNS, LABELS, frame, latest, summary
    from store.probe_tables import format_cell

    found, missing = [], []
    for name, path in zip(names, paths):
        s = store.open(path)
        for model in MODELS:
            result = latest(s, attribute, model)
            if result is None:
                missing.append(name)
                break
            found.append((name, result))
    if missing or not found:
        runs = " ".join(missing or names)
        return PatchTable(
            f"No interventions for {attribute} cached in {', '.join(missing or names)}: p computes "
            f"them (`factrecall-jobs patch {runs} --attribute {attribute}`; `reproduce` does for job).",
            (),
            (),
        )
    df = frame(found)
    agg = summary(df, [r for _, r in found])
    several = len(names) > 1
    rows = tuple(
        (model, str(int(r["layer"])), *(format_cell(r, c, several) for c in COLUMNS))
        for model in MODELS
        for _, r in agg[agg["model"] == model].iterrows()
    )
    caption = (
        f"{attribute} · {int(df['n_people'].iloc[0])} qa_out people · resid_mid replaced at one layer, the last "
        f"prompt token; exact match % [95% bootstrap interval over people{' and seeds' if several else ''}] · "
        f"LEACE removes {int(df['erase_rank'].max())} directions · the same as `factrecall-jobs patch`"
    )
    return PatchTable(caption, ("model", "layer", *(LABELS[c] for c in COLUMNS)), rows)


class PatchView(Vertical):
    """The interventions of the chosen runs: `load(names, paths, attribute)` reads them."""

    @dataclass
    class Loaded(Message, bubble=False):
        key: tuple
        table: PatchTable | None
        error: str = ""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key: tuple | None = None
        self.table: PatchTable | None = None
        self._paths: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Line("Choose runs, then their interventions show here.", id="patch-caption")
        yield DataTable(id="patch-table", cursor_type="row", zebra_stripes=True)

    @dataclass
    class Computed(Message, bubble=False):
        key: tuple
        error: str = ""

    def compute(self, workspace: str, names: tuple[str, ...], paths: tuple[str, ...], attribute: str) -> None:
        """`factrecall-jobs patch NAMES --attribute A` as its own process (the app runs no model), then
        the view reads what it cached."""
        if not names:
            return
        self.key = (names, attribute)
        self._paths = paths
        self.query_one("#patch-caption", Line).update(
            Content(
                visible(
                    f"computing: factrecall-jobs patch {' '.join(names)} --attribute {attribute} "
                    "(about 20 s a run on 2 cores)…"
                )
            )
        )
        self._run(self.key, workspace, names, attribute)

    @work(thread=True, exclusive=True, group="patch-compute")
    def _run(self, key: tuple, workspace: str, names: tuple[str, ...], attribute: str) -> None:
        import os
        import subprocess
        import sys

        env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
        cmd = [sys.executable, "-m", "jobs.cli", "--workspace", workspace, "patch", *names, "--attribute", attribute]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        error = (
            ""
            if done.returncode == 0
            else ((done.stderr.strip() or done.stdout.strip()).splitlines() or [f"exit {done.returncode}"])[-1]
        )
        self.post_message(self.Computed(key, error))

    def on_patch_view_computed(self, message: Computed) -> None:
        if message.key != self.key:
            return
        if message.error:
            self._show(PatchTable(f"factrecall-jobs patch failed: {message.error}", (), ()))
            return
        names, attribute = message.key
        self.load(names, self._paths, attribute)

    def load(self, names: tuple[str, ...], paths: tuple[str, ...], attribute: str) -> None:
        self.key = (names, attribute)
        if not names:
            self._show(PatchTable("Choose runs (space), then their interventions show here.", (), ()))
            return
        self.query_one("#patch-caption", Line).update(Content(visible(f"reading {attribute}'s interventions…")))
        self._read(self.key, names, paths, attribute)

    @work(thread=True, exclusive=True, group="patch-read")
    def _read(self, key: tuple, names: tuple[str, ...], paths: tuple[str, ...], attribute: str) -> None:
        from jobs.errors import USER_ERRORS, first_line

        try:
            self.post_message(self.Loaded(key, read(names, paths, attribute)))
        except USER_ERRORS as err:
            self.post_message(self.Loaded(key, None, first_line(err)))

    def on_patch_view_loaded(self, message: Loaded) -> None:
        if message.key != self.key:  # superseded by another choice
            return
        self._show(message.table or PatchTable(f"cannot read the interventions: {message.error}", (), ()))

    def _show(self, table: PatchTable) -> None:
        """The caption and the table: text, never markup (a caption may quote a store's error)."""
        self.table = table
        self.query_one("#patch-caption", Line).update(Content(visible(table.caption)))
        grid = self.query_one("#patch-table", DataTable)
        grid.clear(columns=True)
        if table.columns:
            grid.add_columns(*(Text(visible(c)) for c in table.columns))
            for row in table.rows:
                grid.add_row(*(Text(visible(c)) for c in row))
