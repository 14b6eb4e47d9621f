"""The Probes pane: linear probes per layer over a run's activation store (the paper's Figures 3
and 4), the same numbers as `factrecall-jobs probe`.

Choose one run, or several (seeds: mean ± sample std, as the CLI with several RUNs), the attribute,
BIO_long or BIO_short, the people the probes train and test on, the site whose vectors are probed
(one the chosen stores hold: `hook@position`, docs/sites.md), and the rest of `probe`'s settings.
`f` fits, in a worker thread (the UI stays live, a bar shows the layers done); `escape` (or `c`)
cancels it. Results the store has cached (group `probes`) are served at once. The chart shows, per
model, the four probe accuracies across layers with Δrep and Δmech; `w` picks which probes' lines it
shows (both, W_QA trained on QA vectors, W_BIO trained on BIO vectors); `m` switches the model where
the charts do not fit side by side. The table beneath holds every number as the CLI prints it. `i`
shows the interventions the stores hold instead (factrecall_tui/patch_view.py; `factrecall-jobs patch`).

The settings are `store.settings.ProbeSettings`, as a whole: the form (factrecall_tui/settings_form.py)
is built from its fields, so a setting added there is a row here. The runs list is
factrecall_tui/probe_runs.py, the computing factrecall_tui/probe_fit.py, how a result is shown
factrecall_tui/probe_results.py (each chart a factrecall_tui/probe_chart.py widget), and the pane's
one state machine (idle, fitting, showing) factrecall_tui/probe_state.py. What stays here is the
screen: its controls, the fit and cache-lookup workers with their messages, and their transitions.
Importing this module imports neither torch nor zarr: `store.probes` (torch) is imported by the
worker, on the first fit. The workers post their progress and results as messages, each with the
serial number of the fit it belongs to (a cancelled or superseded fit's messages are ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Label, Select, SelectionList
from textual.worker import Worker, WorkerState, get_current_worker

from factrecall_tui.messages import Export
from factrecall_tui.pane import HandsFailuresUp, when_mounted
from factrecall_tui.probe_chart import EMPHASIS
from factrecall_tui.probe_fit import Cancelled, ProbeRequest, ProbeResult, StoreNames, compute
from factrecall_tui.probe_results import ProbeResults, seed_note, source
from factrecall_tui.probe_runs import RunChoice
from factrecall_tui.probe_state import FitState, Phase, Threads
from factrecall_tui.remembered import Remembered
from factrecall_tui.runs import RunSummary
from factrecall_tui.settings_form import SettingsForm
from jobs.errors import USER_ERRORS, first_line
from jobs.words import ATTRIBUTES
from store.names import DEFAULT_SITE
from store.settings import ProbeSettings

if TYPE_CHECKING:
    import pandas as pd

# The form's words where the field's name is not the pane's (the rest: the name, as `probe`'s flag).
LABELS = {"bio": "BIO", "train_split": "train on", "test_split": "test on"}
OPTION_LABELS = {"bio_long": "long (Fig. 3)", "bio_short": "short (Fig. 4)"}


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
        self._choice = RunChoice(remembered=remembered, workspace=workspace, id="probe-runs", compact=True)
        self.form = SettingsForm(
            ProbeSettings(),
            # The chosen stores' attributes and sites, once runs are chosen: a site is one the stores
            # hold, chosen from a list, never typed.
            choices={"attribute": ATTRIBUTES, "site": (DEFAULT_SITE,)},
            labels=LABELS,
            option_labels=OPTION_LABELS,
            prefix="probe-",
            id="probe-settings",
        )
        self._stores = StoreNames()
        self._state = FitState()
        self._threads = Threads()
        self.idle = self._threads.idle  # set while no fit thread runs (even a cancelled one)
        self._lookup_timer: Timer | None = None  # a cache lookup, soon after the settings last changed
        self._shown = ProbeResults(id="probe-main")

    # -- what the pane is doing, read-only --------------------------------------------------------
    @property
    def state(self) -> Phase:
        """Idle (nothing shown), fitting, or showing a result (factrecall_tui/probe_state.py)."""
        return self._state.phase

    @property
    def busy(self) -> bool:
        """A fit runs (a cancelled one's thread may still be stopping: `idle` says when it has)."""
        return self._state.busy

    @property
    def request(self) -> ProbeRequest | None:
        """What the shown result is of."""
        return self._state.shown

    @property
    def runs(self) -> dict[str, RunSummary]:
        """The runs with a store, by name."""
        return self._choice.runs

    @property
    def names(self) -> tuple[str, ...]:
        """The runs offered, in the list's order."""
        return self._choice.names

    @property
    def models(self) -> list[str]:
        """The shown result's models, as `probe` orders them."""
        return self._shown.models

    @property
    def results(self) -> pd.DataFrame | None:
        """The shown result's summary over runs (mean, std), as the charts plot it."""
        return self._shown.results

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(id="probe-side"):
            yield self.form
            with Horizontal(classes="probe-row"):
                yield Label("chart", classes="probe-label")
                yield Select(EMPHASIS, value="both", allow_blank=False, compact=True, id="probe-emphasis")
            with Horizontal(id="probe-buttons"):
                yield Button("Fit (f)", id="probe-fit", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="probe-cancel", compact=True, disabled=True)
            yield Label("Runs (space; several = seeds)", classes="probe-caption")
            yield self._choice
        yield self._shown

    # -- the contract with the app ----------------------------------------------------------------
    @when_mounted
    def show(self, runs: list[RunSummary]) -> None:
        """Every run of the workspace, newest first (after a scan that changed a run). Offers those with a store; keeps
        the selection (a run that lost its store leaves it)."""
        changed = self._choice.offer(runs)
        if not self._choice.names and not self.busy:
            self._status("No run has an activation store yet: `factrecall-jobs dump RUN` writes one.")
        if changed:
            self._selection_changed()

    @when_mounted
    def focus_run(self, name: str) -> None:
        """Select that run, and only it, for probing."""
        why = self._choice.choose(name)
        if why:
            self._status((why, "red"))
            return
        self._selection_changed()

    # -- controls ---------------------------------------------------------------------------------
    def selected_runs(self) -> list[str]:
        return self._choice.chosen()

    def current_request(self) -> ProbeRequest | None:
        """What the controls say: None without a run chosen, or while a setting is invalid (the form
        says which)."""
        names = self.selected_runs()
        settings = self.form.value
        if not names or settings is None:
            return None
        return ProbeRequest(tuple(names), self._choice.paths(names), settings)

    def _selection_changed(self) -> None:
        """The stores chosen hold these attributes and sites: the form offers them (the same one kept
        where it can be; else a site is resid_mid@last where the stores hold it, else their first)."""
        names = self.selected_runs()
        paths = [self.runs[n].path for n in names]
        attributes = self._stores.common(paths) if names else ATTRIBUTES
        sites = self._stores.sites(paths) if names else (DEFAULT_SITE,)
        for field, offered in (("attribute", attributes), ("site", sites)):
            if offered != self.form.values(field):
                self.form.set_choices(field, offered)
        self._settings_changed()

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        self._selection_changed()

    def on_settings_form_changed(self, event: SettingsForm.Changed) -> None:
        event.stop()
        self._settings_changed()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "probe-emphasis":
            self._draw()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "probe-fit":
            self.action_fit()
        elif event.button.id == "probe-cancel":
            self.action_cancel()

    def action_cycle_attribute(self) -> None:
        self.form.cycle("attribute")

    def action_toggle_bio(self) -> None:
        self.form.cycle("bio")

    def action_cycle_emphasis(self) -> None:
        select = self.query_one("#probe-emphasis", Select)
        values = [v for _, v in EMPHASIS]
        select.value = values[(values.index(select.value) + 1) % len(values) if select.value in values else 0]

    def action_switch_model(self) -> None:
        self._shown.switch_model()

    # -- the interventions view (factrecall_tui/patch_view.py) --------------------------------------
    def action_toggle_view(self) -> None:
        """`i`: the interventions the chosen runs' stores hold, in place of the probes (and back)."""
        if self._shown.toggle_interventions():
            self._load_patches()

    def action_patch(self) -> None:
        """`p` in the interventions view: compute them for the chosen runs and attribute (a process)."""
        view = self._shown.patches
        names = tuple(self.selected_runs())
        if not view.display or not names:
            return
        workspace = str(self.runs[names[0]].path.parent.parent)
        view.compute(workspace, names, self._choice.paths(names), str(self.form.get("attribute")))

    def _load_patches(self) -> None:
        view = self._shown.patches
        if view.display:
            names = tuple(self.selected_runs())
            view.load(names, self._choice.paths(names), str(self.form.get("attribute")))

    # -- a change of settings: the store's cache answers at once, where it can ------------------------
    def _settings_changed(self) -> None:
        """Show the store's cached result for the new settings at once, if it has one (only once a
        fit has loaded store.probes: see FitState.probes_loaded)."""
        if self._lookup_timer is not None:
            self._lookup_timer.stop()
        self._lookup_timer = self.set_timer(0.15, self._maybe_lookup)

    def _maybe_lookup(self) -> None:
        self._lookup_timer = None
        self._load_patches()  # the interventions view, when shown, follows the runs and attribute too
        request = self.current_request()
        self._shown.mark_stale(request is not None and self.request is not None and request != self.request)
        if request is None or request == self.request:
            return
        if self._state.probes_loaded:
            self._lookup(request)
        elif not self.busy:
            self._status(f"f: fit probes for {request.describe()}")

    # -- fitting --------------------------------------------------------------------------------
    def action_fit(self) -> None:
        request = self.current_request()
        if request is None:
            why = self.form.problem if self.selected_runs() else None
            self._status((why or "choose a run with an activation store first (space selects it)", "red"))
            return
        serial = self._state.start(request)
        self._set_busy(True)
        self._status(f"fitting probes: {request.describe()}…", self._seed_note(request))
        self._fit(request, serial)

    def action_cancel(self) -> None:
        """Stop the fit: the UI is free at once (its later messages are ignored); the thread stops
        at its next layer, then the status says `cancelled` for good."""
        if not self.busy:
            self._status("no fit is running")
            return
        self.workers.cancel_group(self, "probes")
        self._state.stop()
        self._set_busy(False)
        self._status(("cancelled", "yellow"), " (stopping after the current layer…)")

    @work(thread=True, exclusive=True, group="probes", exit_on_error=False)
    def _fit(self, request: ProbeRequest, serial: int) -> None:
        worker = get_current_worker()
        with self._threads.running():
            try:
                self._compute(request, serial, worker)
            except Cancelled:
                self.post_message(self.Failed(serial, request, "cancelled", cancelled=True))
            except USER_ERRORS as err:  # e.g. a truncated store, or no dumped model: one line in the pane
                self.post_message(self.Failed(serial, request, first_line(err)))

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
        if event.worker.group == "probes" and event.state == WorkerState.ERROR and self._state.stop():
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
        return seed_note(request, [self.runs[n].spec for n in request.runs if n in self.runs])

    # -- the worker's messages ----------------------------------------------------------------------
    @on(Progress)
    def _progress(self, message: Progress) -> None:
        if not self._state.counts(message.serial):
            return
        self._shown.progress(message.done, message.total)
        self._status(f"fitting probes: {message.what} ({message.done}/{message.total} layers)")

    @on(Finished)
    async def _finished(self, message: Finished) -> None:
        if message.serial is None:  # a cache lookup: only if it still answers the controls
            if message.request != self.current_request():
                return
        else:
            self._state.probes_loaded = True
            if not self._state.counts(message.serial):
                return  # a fit since superseded or cancelled
            self._state.stop()
            self._set_busy(False)
        await self._show_results(message)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        if message.serial is None:  # a cache lookup: quiet while a fit runs or when it answers old controls
            if self.busy or message.request != self.current_request():
                return
            self._status(
                (message.text, "red")
                if message.text
                else f"f: fit probes for {message.request.describe()} (the store has no cached result)"
            )
            return
        self._state.probes_loaded = True
        if message.serial != self._state.serial:
            return
        if message.cancelled or not self.busy:  # the researcher cancelled it: the thread has stopped
            if self._state.stop():
                self._set_busy(False)
            self._status(("cancelled", "yellow"), ": the fit stopped; press f to fit again")
            return
        self._state.stop()
        self._set_busy(False)
        self._status((message.text, "red"))
        self.app.notify(message.text, title="probes", severity="error")

    def _set_busy(self, busy: bool) -> None:
        self._shown.busy(busy)
        self.query_one("#probe-cancel", Button).disabled = not busy

    def _status(self, *parts: str | tuple[str, str]) -> None:
        self._shown.status(*parts)

    def action_export(self) -> None:
        """The shown result's numbers per model, format and layer (mean and sample std over the runs),
        as CSV: a file in WORKSPACE/exports and the clipboard."""
        if self.results is None or self.request is None:
            self.notify("nothing to export yet: fit the probes first (f)", severity="warning")
            return
        s = self.request.settings
        what = f"probes-{s.attribute}-{s.bio}-{s.train_split}-{s.test_split}"
        if s.site != DEFAULT_SITE:  # the paper's site unnamed, as before sites
            what += f"-{s.site}"
        named = any(n is not None for n in self.results.index.names)  # a plain row number is not data
        self.post_message(Export(what, self.results.to_csv(index=named, lineterminator="\n")))

    # -- results (factrecall_tui/probe_results.py) ------------------------------------------------
    async def _show_results(self, message: Finished) -> None:
        request, result = message.request, message.result
        self._state.show(request)
        self._status(source(result), self._seed_note(request) if message.serial is not None else "")
        await self._shown.show(request, result, self._emphasis(), stale=request != self.current_request())

    def _emphasis(self) -> str:
        return str(self.query_one("#probe-emphasis", Select).value)

    def _draw(self) -> None:
        self._shown.draw(self._emphasis())
