"""The Probes pane: linear probes per layer over a run's activation store (the paper's Figures 3
and 4), the same numbers as `factrecall-jobs probe`.

Choose one run, or several (seeds: mean ± sample std, as the CLI with several RUNs), the attribute,
BIO_long or BIO_short, and the people the probes train and test on. `f` fits, in a worker thread
(the UI stays live, a bar shows the layers done); `escape` (or `c`) cancels it. Results the store
has cached (group `probes`) are served at once. The chart shows, per model, the four probe
accuracies across layers with Δrep and Δmech; `w` picks which probes' lines it shows (both, W_QA
trained on QA vectors, W_BIO trained on BIO vectors); `m` switches the model where the charts do
not fit side by side. The table beneath holds every number as the CLI prints it. `i` shows the
interventions the stores hold instead (factrecall_tui/patch_view.py; `factrecall-jobs patch`).

The computing is factrecall_tui/probe_fit.py and each chart a factrecall_tui/probe_chart.py widget;
what stays here (about 490 lines) is one screen's state: its controls, the fit and cache-lookup
workers with their messages, and the results they show.
Importing this module imports neither torch nor zarr: `store.probes` (torch) is imported by the
worker, on the first fit. The workers post their progress and results as messages, each with the
serial number of the fit it belongs to (a cancelled or superseded fit's messages are ignored).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Label, ProgressBar, Select, SelectionList, Static
from textual.widgets.selection_list import Selection
from textual.worker import Worker, WorkerState, get_current_worker

from factrecall_tui.checklist import Checklist
from factrecall_tui.messages import Export
from factrecall_tui.pane import HandsFailuresUp, when_mounted
from factrecall_tui.patch_view import PatchView
from factrecall_tui.probe_chart import EMPHASIS, ProbeChart
from factrecall_tui.probe_fit import Cancelled, ProbeRequest, ProbeResult, compute, store_attributes
from factrecall_tui.quiet import DataTable, Line
from factrecall_tui.remembered import Remembered
from factrecall_tui.runs import RunSummary
from jobs.errors import USER_ERRORS, first_line
from jobs.shown import visible
from jobs.words import ATTRIBUTES
from store.names import PROBE_LABELS, PROBE_SPLITS, STORE_NAME

if TYPE_CHECKING:
    import pandas as pd

BIO_OPTIONS = (("long (Fig. 3)", "bio_long"), ("short (Fig. 4)", "bio_short"))
MIN_CHART_WIDTH = 40  # narrower than this per model: one model at a time (`m` switches)


class ProbesPane(HandsFailuresUp, Widget):
    """Linear probes per layer (Figures 3 and 4) for the chosen runs; see the module docstring."""

    BINDINGS = [
        Binding("f", "fit", "Fit"),
        Binding("escape", "cancel", "Cancel"),
        Binding("c", "cancel", "Cancel fit", show=False),
        Binding("a", "cycle_attribute", "Attribute"),
        Binding("b", "toggle_bio", "BIO"),
        Binding("w", "cycle_emphasis", "Probes shown"),
        Binding("m", "switch_model", "Model"),
        Binding("i", "toggle_view", "Interventions"),
        Binding("p", "patch", "Compute interventions", show=False),
        Binding("e", "export", "Export", show=False),
    ]

    # The workers' messages. `serial` numbers the fit they belong to; None for a cache lookup.
    @dataclass
    class Progress(Message, bubble=False):
        serial: int
        done: int  # layers fitted, of `total`
        total: int
        what: str  # the (run, model) being fitted

    @dataclass
    class Finished(Message, bubble=False):
        serial: int | None
        request: ProbeRequest
        result: ProbeResult

    @dataclass
    class Failed(Message, bubble=False):
        serial: int | None
        request: ProbeRequest
        text: str  # one line; "" for a lookup the cache cannot answer
        cancelled: bool = False

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        remembered: Remembered | None = None,
        workspace: Path | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        # The runs chosen last time in this workspace (factrecall_tui/remembered.py), offered first.
        self._remembered = remembered
        self._workspace = workspace
        self.runs: dict[str, RunSummary] = {}  # runs with a store, by name
        self._known: set[str] = set()  # every run's name (to say why one is not offered)
        self._names: list[str] = []  # the list's options, in order
        self._caption: Text | None = None  # what the shown result is of
        self._chose = False  # a run was selected once (then a rescan never picks one)
        self._attr_cache: dict[tuple[str, int], tuple[str, ...] | None] = {}
        self._attribute_options: tuple[str, ...] = ATTRIBUTES
        self._serial = 0  # the fit whose messages count
        self._fitting: ProbeRequest | None = None
        self._threads = 0
        self._lock = threading.Lock()
        self.idle = threading.Event()  # set while no fit thread runs (even a cancelled one)
        self.idle.set()
        self._lookup_timer: Timer | None = None
        # Whether a fit has ended here, so store.probes (torch) is loaded: only then does a change of
        # settings look up the store's cache, which needs it. The TUI process does not pay for torch
        # until the researcher probes.
        self._probes_loaded = False
        self._chart_model: str | None = None  # the model shown where charts do not fit side by side
        # What is shown: the request, its models and the summary (mean, std) the charts plot.
        self.request: ProbeRequest | None = None
        self.models: list[str] = []
        self.results: pd.DataFrame | None = None

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(id="probe-side"):
            with Horizontal(classes="probe-row"):
                yield Label("attribute", classes="probe-label")
                yield Select(
                    [(a, a) for a in ATTRIBUTES], value="job", allow_blank=False, compact=True, id="probe-attribute"
                )
            with Horizontal(classes="probe-row"):
                yield Label("BIO", classes="probe-label")
                yield Select(BIO_OPTIONS, value="bio_long", allow_blank=False, compact=True, id="probe-bio")
            with Horizontal(classes="probe-row"):
                yield Label("train on", classes="probe-label")
                yield Select(
                    [(s, s) for s in PROBE_SPLITS], value="qa_in", allow_blank=False, compact=True, id="probe-train"
                )
            with Horizontal(classes="probe-row"):
                yield Label("test on", classes="probe-label")
                yield Select(
                    [(s, s) for s in PROBE_SPLITS], value="qa_out", allow_blank=False, compact=True, id="probe-test"
                )
            with Horizontal(classes="probe-row"):
                yield Label("chart", classes="probe-label")
                yield Select(EMPHASIS, value="both", allow_blank=False, compact=True, id="probe-emphasis")
            with Horizontal(id="probe-buttons"):
                yield Button("Fit (f)", id="probe-fit", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="probe-cancel", compact=True, disabled=True)
            yield Label("Runs (space; several = seeds)", classes="probe-caption")
            yield Checklist[str](id="probe-runs", compact=True)
        with Vertical(id="probe-main"):
            yield Line("", id="probe-caption")
            yield Line("Choose runs with an activation store, then press f to fit the probes.", id="probe-status")
            yield ProgressBar(id="probe-progress", show_eta=False)
            yield Horizontal(id="probe-charts")
            yield DataTable(id="probe-table", cursor_type="row", zebra_stripes=True)
            yield PatchView(id="patch-view")

    def on_mount(self) -> None:
        self.query_one("#probe-progress", ProgressBar).display = False
        self.query_one("#patch-view", PatchView).display = False

    # -- the contract with the app ----------------------------------------------------------------
    @when_mounted
    def show(self, runs: list[RunSummary]) -> None:
        """Every run of the workspace, newest first (after a scan that changed a run). Offers those with a store; keeps
        the selection (a run that lost its store leaves it)."""
        self._known = {r.name for r in runs}
        stored = [r for r in runs if r.has_store]
        self.runs = {r.name: r for r in stored}
        names = [r.name for r in stored]
        if not names and self._fitting is None:
            self._status("No run has an activation store yet: `factrecall-jobs dump RUN` writes one.")
        if names == self._names:
            return
        box = self.query_one("#probe-runs", SelectionList)
        keep = [n for n in box.selected if n in self.runs]
        highlighted = (
            self._names[box.highlighted] if box.highlighted is not None and box.highlighted < len(self._names) else None
        )
        if not keep and not self._chose and names:
            # The runs chosen here last time, or the newest run with a store, until the researcher chooses.
            last = self._remembered.probe_runs(self._workspace) if self._remembered is not None else []
            keep = [n for n in last if n in self.runs] or [names[0]]
        with self.prevent(SelectionList.SelectedChanged):
            box.clear_options()
            box.add_options([Selection(Text(n), n, n in keep) for n in names])
        self._names = names
        if highlighted in names:
            box.highlighted = names.index(highlighted)
        elif keep:
            box.highlighted = names.index(keep[0])
        self._selection_changed()

    @when_mounted
    def focus_run(self, name: str) -> None:
        """Select that run, and only it, for probing."""
        if name not in self.runs:
            why = (
                f"run {name} has no activation store (yet): `factrecall-jobs dump {name}` writes one"
                if name in self._known
                else f"no run {name!r} in the workspace"
            )
            self._status((why, "red"))
            return
        box = self.query_one("#probe-runs", SelectionList)
        with self.prevent(SelectionList.SelectedChanged):
            box.deselect_all()
            box.select(name)
        box.highlighted = self._names.index(name)
        self._chose = True
        self._remember()
        self._selection_changed()

    # -- controls ---------------------------------------------------------------------------------
    def selected_runs(self) -> list[str]:
        chosen = set(self.query_one("#probe-runs", SelectionList).selected)
        return [n for n in self._names if n in chosen]

    def current_request(self) -> ProbeRequest | None:
        names = self.selected_runs()
        if not names:
            return None
        value = lambda wid: str(self.query_one(wid, Select).value)  # noqa: E731
        return ProbeRequest(
            tuple(names),
            tuple(str(self.runs[n].path) for n in names),
            value("#probe-attribute"),
            value("#probe-bio"),
            value("#probe-train"),
            value("#probe-test"),
        )

    def _attributes(self, names: list[str]) -> tuple[str, ...]:
        """The attributes every chosen store has, in the first one's (BIO) order."""
        found: list[tuple[str, ...]] = []
        for n in names:
            path = self.runs[n].path
            try:
                stamp = (path / STORE_NAME / "zarr.json").stat().st_mtime_ns
            except OSError:
                stamp = 0
            key = (str(path), stamp)
            if key not in self._attr_cache:
                self._attr_cache[key] = store_attributes(path)
            if self._attr_cache[key]:
                found.append(self._attr_cache[key])
        if not found:
            return ATTRIBUTES
        common = [a for a in found[0] if all(a in f for f in found[1:])]
        return tuple(common) or found[0]

    def _selection_changed(self) -> None:
        names = self.selected_runs()
        attributes = self._attributes(names) if names else ATTRIBUTES
        if attributes != self._attribute_options:
            select = self.query_one("#probe-attribute", Select)
            old = select.value
            with self.prevent(Select.Changed):
                select.set_options([(a, a) for a in attributes])
                select.value = old if old in attributes else ("job" if "job" in attributes else attributes[0])
            self._attribute_options = attributes
        self._settings_changed()

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        self._chose = True
        self._remember()
        self._selection_changed()

    def _remember(self) -> None:
        if self._remembered is not None and self._workspace is not None:
            self._remembered.set_probe_runs(self._workspace, self.selected_runs())

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "probe-emphasis":
            self._draw()
        else:
            self._settings_changed()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "probe-fit":
            self.action_fit()
        elif event.button.id == "probe-cancel":
            self.action_cancel()

    def _cycle(self, wid: str, values: tuple[str, ...] | list[str]) -> None:
        select = self.query_one(wid, Select)
        if values:
            i = values.index(select.value) if select.value in values else -1
            select.value = values[(i + 1) % len(values)]

    def action_cycle_attribute(self) -> None:
        self._cycle("#probe-attribute", self._attribute_options)

    def action_toggle_bio(self) -> None:
        self._cycle("#probe-bio", [v for _, v in BIO_OPTIONS])

    def action_cycle_emphasis(self) -> None:
        self._cycle("#probe-emphasis", [v for _, v in EMPHASIS])

    def action_switch_model(self) -> None:
        if not self.models:
            return
        shown = self._chart_model if self._chart_model in self.models else self.models[0]
        self._chart_model = self.models[(self.models.index(shown) + 1) % len(self.models)]
        self._layout_charts()

    def action_toggle_view(self) -> None:
        """`i`: the interventions the chosen runs' stores hold, in place of the probes (and back)."""
        view = self.query_one("#patch-view", PatchView)
        view.display = not view.display
        for wid in ("#probe-charts", "#probe-table"):
            self.query_one(wid).display = not view.display
        if view.display:
            self._load_patches()

    def action_patch(self) -> None:
        """`p` in the interventions view: compute them for the chosen runs and attribute (a process)."""
        view = self.query_one("#patch-view", PatchView)
        names = tuple(self.selected_runs())
        if not view.display or not names:
            return
        paths = tuple(str(self.runs[n].path) for n in names)
        view.compute(
            str(self.runs[names[0]].path.parent.parent),
            names,
            paths,
            str(self.query_one("#probe-attribute", Select).value),
        )

    def _load_patches(self) -> None:
        view = self.query_one("#patch-view", PatchView)
        if view.display:
            names = tuple(self.selected_runs())
            view.load(
                names,
                tuple(str(self.runs[n].path) for n in names),
                str(self.query_one("#probe-attribute", Select).value),
            )

    def _settings_changed(self) -> None:
        """Show the store's cached result for the new settings at once, if it has one (only once a
        fit has loaded store.probes: see `_probes_loaded`)."""
        if self._lookup_timer is not None:
            self._lookup_timer.stop()
        self._lookup_timer = self.set_timer(0.15, self._maybe_lookup)

    def _maybe_lookup(self) -> None:
        self._lookup_timer = None
        self._load_patches()  # the interventions view, when shown, follows the runs and attribute too
        request = self.current_request()
        self._mark_stale(request is not None and self.request is not None and request != self.request)
        if request is None or request == self.request:
            return
        if self._probes_loaded:
            self._lookup(request)
        elif self._fitting is None:
            self._status(f"f: fit probes for {request.describe()}")

    # -- fitting --------------------------------------------------------------------------------
    def action_fit(self) -> None:
        request = self.current_request()
        if request is None:
            self._status(("choose a run with an activation store first (space selects it)", "red"))
            return
        self._serial += 1
        self._fitting = request
        self._set_busy(True)
        bar = self.query_one("#probe-progress", ProgressBar)
        bar.update(total=None, progress=0)
        note = self._seed_note(request)
        self._status(f"fitting probes: {request.describe()}…", note)
        self._fit(request, self._serial)

    def action_cancel(self) -> None:
        """Stop the fit: the UI is free at once (its later messages are ignored); the thread stops
        at its next layer, then the status says `cancelled` for good."""
        if self._fitting is None:
            self._status("no fit is running")
            return
        self.workers.cancel_group(self, "probes")
        self._fitting = None
        self._set_busy(False)
        self._status(("cancelled", "yellow"), " (stopping after the current layer…)")

    @work(thread=True, exclusive=True, group="probes", exit_on_error=False)
    def _fit(self, request: ProbeRequest, serial: int) -> None:
        worker = get_current_worker()
        with self._lock:
            self._threads += 1
            self.idle.clear()
        try:
            self._compute(request, serial, worker)
        except Cancelled:
            self.post_message(self.Failed(serial, request, "cancelled", cancelled=True))
        except USER_ERRORS as err:  # e.g. a truncated store, or no dumped model: one line in the pane
            self.post_message(self.Failed(serial, request, first_line(err)))
        finally:
            with self._lock:
                self._threads -= 1
                if self._threads == 0:
                    self.idle.set()

    @work(thread=True, exclusive=True, group="probes-cache", exit_on_error=False)
    def _lookup(self, request: ProbeRequest) -> None:
        worker = get_current_worker()
        try:
            self._compute(request, None, worker)
        except Cancelled:
            pass
        except USER_ERRORS as err:
            self.post_message(self.Failed(None, request, first_line(err)))

    @on(Worker.StateChanged)
    def _fit_failed(self, event: Worker.StateChanged) -> None:
        """A fit that failed unexpectedly (the app shows why): the pane is free again."""
        if event.worker.group == "probes" and event.state == WorkerState.ERROR and self._fitting is not None:
            self._fitting = None
            self._set_busy(False)
            error = event.worker.error
            self._status((first_line(error) if error is not None else "the fit failed", "red"))

    def _compute(self, request: ProbeRequest, serial: int | None, worker: Worker[None]) -> None:
        """In a worker thread: a fit (`serial` numbers it), or with serial None a lookup of what the
        store has cached (an answer only when it has all of it)."""

        def progress(done: int, total: int, what: str) -> None:
            if serial is not None:
                self.post_message(self.Progress(serial, done, total, what))

        result = compute(request, fit=serial is not None, stop=lambda: worker.is_cancelled, progress=progress)
        if result is None:
            self.post_message(self.Failed(None, request, ""))
        else:
            self.post_message(self.Finished(serial, request, result))

    def _seed_note(self, request: ProbeRequest) -> str | tuple[str, str]:
        """A warning where runs taken as seeds differ in more than their seed, or where the probes are
        scored on people they learned from."""
        specs = [
            {k: v for k, v in self.runs[n].spec.items() if k not in ("seed", "name", "device")}
            for n in request.runs
            if n in self.runs
        ]
        differ = sorted(
            {k for spec in specs[1:] for k in spec.keys() | specs[0].keys() if spec.get(k) != specs[0].get(k)}
        )
        notes = [f"the runs differ beyond their seed: {', '.join(differ)}"] if differ else []
        if request.train_split == request.test_split or "all" in (request.train_split, request.test_split):
            notes.append("trained and tested on the same people: these accuracies are not held out")
        return (f" (note: {'; '.join(notes)})", "yellow") if notes else ""

    def _mark_stale(self, stale: bool) -> None:
        """The shown result is of other settings than the controls now say: said above it, until a fit
        or a cached result answers the new ones."""
        caption = self.query_one("#probe-caption", Static)
        caption.set_class(stale, "-stale")
        if stale and self._caption is not None:
            caption.update(
                Text.assemble(("shown: the previous settings (f fits these) · ", "bold yellow"), self._caption)
            )
        elif self._caption is not None:
            caption.update(self._caption)

    # -- the worker's messages ----------------------------------------------------------------------
    @on(Progress)
    def _progress(self, message: Progress) -> None:
        if message.serial != self._serial or self._fitting is None:
            return
        bar = self.query_one("#probe-progress", ProgressBar)
        bar.update(total=max(message.total, 1), progress=message.done)
        self._status(f"fitting probes: {message.what} ({message.done}/{message.total} layers)")

    @on(Finished)
    async def _finished(self, message: Finished) -> None:
        if message.serial is not None:
            self._probes_loaded = True
        if message.serial is None:  # a cache lookup: only if it still answers the controls
            if message.request != self.current_request():
                return
        elif message.serial != self._serial or self._fitting is None:
            return  # a fit since superseded or cancelled
        else:
            self._fitting = None
            self._set_busy(False)
        await self._show_results(message)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        if message.serial is not None:
            self._probes_loaded = True
        if message.serial is None:  # a cache lookup: quiet while a fit runs or when it answers old controls
            if self._fitting is not None or message.request != self.current_request():
                return
            self._status(
                (message.text, "red")
                if message.text
                else f"f: fit probes for {message.request.describe()} (the store has no cached result)"
            )
            return
        if message.serial != self._serial:
            return
        if self._fitting is None or message.cancelled:  # the researcher cancelled it: the thread has stopped
            self._status(("cancelled", "yellow"), ": the fit stopped; press f to fit again")
            return
        self._fitting = None
        self._set_busy(False)
        self._status((message.text, "red"))
        self.app.notify(message.text, title="probes", severity="error")

    def _set_busy(self, busy: bool) -> None:
        self.query_one("#probe-progress", ProgressBar).display = busy
        self.query_one("#probe-cancel", Button).disabled = not busy

    def _status(self, *parts: str | tuple[str, str]) -> None:
        """One line (it may wrap): plain strings and (text, style) pairs, never parsed as markup; their
        control characters (a store's words, an error quoting them) written out."""
        shown = [(visible(p[0]), p[1]) if isinstance(p, tuple) else visible(p) for p in parts]
        self.query_one("#probe-status", Static).update(Text.assemble(*shown))

    def action_export(self) -> None:
        """The shown result's numbers per model, format and layer (mean and sample std over the runs),
        as CSV: a file in WORKSPACE/exports and the clipboard."""
        if self.results is None or self.request is None:
            self.notify("nothing to export yet: fit the probes first (f)", severity="warning")
            return
        r = self.request
        what = f"probes-{r.attribute}-{r.bio}-{r.train_split}-{r.test_split}"
        named = any(n is not None for n in self.results.index.names)  # a plain row number is not data
        self.post_message(Export(what, self.results.to_csv(index=named, lineterminator="\n")))

    # -- results --------------------------------------------------------------------------------
    async def _show_results(self, message: Finished) -> None:
        from store.probes import counts, row_cells, table_columns  # loaded already, by the worker that made these

        request, result = message.request, message.result
        df, agg = result.df, result.agg
        self.request, self.models, self.results = request, result.models, agg
        several = len(request.runs) > 1
        runs = request.runs[0] if not several else f"{len(request.runs)} runs (mean, as `probe`)"
        self._caption = Text.assemble(
            (visible(request.attribute), "bold"),
            f" · {request.bio} · {runs} · {counts(df, 'n_classes')} classes · "
            f"train {request.train_split} ({counts(df, 'n_train')}) → test {request.test_split} "
            f"({counts(df, 'n_test')}) · [95% bootstrap interval over people{' and seeds' if several else ''}] · "
            "Sel = accuracy - the control task",
        )
        self._mark_stale(request != self.current_request())
        # No timings here: the same fit reads the same (snapshots).
        source = (
            "probes from the store's cache"
            if result.cached == result.units
            else "probes fitted" + (f" ({result.cached} of {result.units} from the cache)" if result.cached else "")
        )
        self._status(source, self._seed_note(request) if message.serial is not None else "")
        table = self.query_one("#probe-table", DataTable)
        table.clear(columns=True)
        table.add_columns("model", "layer", *(PROBE_LABELS[k] for k in table_columns()))
        for model in result.models:
            for _, r in agg[agg["model"] == model].iterrows():  # a store's model name: text, not markup
                table.add_row(Text(visible(model)), str(int(r["layer"])), *row_cells(r, several))
        box = self.query_one("#probe-charts", Horizontal)
        if [c.model for c in box.query_children(ProbeChart)] != result.models:
            await box.remove_children()
            await box.mount(*(ProbeChart(m) for m in result.models))
        self._draw()

    def _draw(self) -> None:
        """One chart per model: the emphasised probes' accuracies and Δrep, Δmech across layers."""
        if self.results is None:
            return
        emphasis = str(self.query_one("#probe-emphasis", Select).value)
        for chart in self.query_one("#probe-charts", Horizontal).query_children(ProbeChart):
            chart.draw(self.results, emphasis)
        self._layout_charts()

    def _layout_charts(self) -> None:
        """Side by side where each gets MIN_CHART_WIDTH columns; else one, `m` switches."""
        box = self.query_one("#probe-charts", Horizontal)
        width = box.size.width or self.size.width
        one = len(self.models) > 1 and width < MIN_CHART_WIDTH * len(self.models)
        if self._chart_model not in self.models:
            self._chart_model = self.models[0] if self.models else None
        for chart in box.query_children(ProbeChart):
            chart.display = not one or chart.model == self._chart_model

    def on_resize(self) -> None:
        self.call_after_refresh(self._layout_charts)
