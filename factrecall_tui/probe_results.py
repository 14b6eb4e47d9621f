"""The Probes pane's right-hand side: what it says and shows. A caption naming what the shown numbers
are of (the settings, the site whose vectors were probed, the runs; marked when the controls have
changed since), the status line and the fit's progress bar, one chart per model
(factrecall_tui/probe_chart.py; side by side where they fit, else `m` switches), the table beneath
(every number as `factrecall-jobs probe` prints it), and in their place, on `i`, the interventions
view (factrecall_tui/patch_view.py).

`store.probes` is imported by the methods that need it, once a worker has loaded it (never at
import time: it imports torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ProgressBar

from factrecall_tui.patch_view import PatchView
from factrecall_tui.probe_chart import ProbeChart
from factrecall_tui.probe_fit import ProbeRequest, ProbeResult
from factrecall_tui.quiet import DataTable, Line
from jobs.shown import visible
from store.names import PROBE_LABELS

if TYPE_CHECKING:
    import pandas as pd

MIN_CHART_WIDTH = 40  # narrower than this per model: one model at a time (`m` switches)
STALE = ("shown: the previous settings (f fits these) · ", "bold yellow")


def caption(request: ProbeRequest, result: ProbeResult) -> Text:
    """What the shown numbers are of: the settings (the site too: `site mlp_out@subject_last`), the
    runs, the people counted and the intervals."""
    from store.probe_tables import counts

    s, df = request.settings, result.df
    several = len(request.runs) > 1
    runs = request.runs[0] if not several else f"{len(request.runs)} runs (mean, as `probe`)"
    return Text.assemble(
        (visible(s.attribute), "bold"),
        f" · {s.bio} · site ",
        (s.site, "bold"),  # a full site name (store.settings checked it): which vectors these numbers are of
        f" · {runs} · {counts(df, 'n_classes')} classes · "
        f"train {s.train_split} ({counts(df, 'n_train')}) → test {s.test_split} "
        f"({counts(df, 'n_test')}) · [95% bootstrap interval over people{' and seeds' if several else ''}] · "
        "Sel = accuracy - the control task",
    )


def source(result: ProbeResult) -> str:
    """Where the numbers came from (no timings: the same fit reads the same, in the snapshots)."""
    if result.cached == result.units:
        return "probes from the store's cache"
    return "probes fitted" + (f" ({result.cached} of {result.units} from the cache)" if result.cached else "")


def seed_note(request: ProbeRequest, specs: list[dict]) -> str | tuple[str, str]:
    """A warning where runs taken as seeds differ in more than their seed (`specs`: the runs' specs),
    or where the probes are scored on people they learned from."""
    specs = [{k: v for k, v in spec.items() if k not in ("seed", "name", "device")} for spec in specs]
    differ = sorted({k for spec in specs[1:] for k in spec.keys() | specs[0].keys() if spec.get(k) != specs[0].get(k)})
    notes = [f"the runs differ beyond their seed: {', '.join(differ)}"] if differ else []
    train, test = request.settings.train_split, request.settings.test_split
    if train == test or "all" in (train, test):
        notes.append("trained and tested on the same people: these accuracies are not held out")
    return (f" (note: {'; '.join(notes)})", "yellow") if notes else ""


class ProbeResults(Vertical):
    """What the Probes pane shows: `status(...)`, `busy(...)`, `progress(...)`, `show(request, result, ...)`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.models: list[str] = []
        self.results: pd.DataFrame | None = None  # the summary (mean, std) the charts plot
        self._caption: Text | None = None  # what the shown result is of
        self._chart_model: str | None = None  # the model shown where charts do not fit side by side

    def compose(self) -> ComposeResult:
        yield Line("", id="probe-caption")
        yield Line("Choose runs with an activation store, then press f to fit the probes.", id="probe-status")
        yield ProgressBar(id="probe-progress", show_eta=False)
        yield Horizontal(id="probe-charts")
        yield DataTable(id="probe-table", cursor_type="row", zebra_stripes=True)
        yield PatchView(id="patch-view")

    def on_mount(self) -> None:
        self.query_one("#probe-progress", ProgressBar).display = False
        self.patches.display = False

    @property
    def patches(self) -> PatchView:
        return self.query_one("#patch-view", PatchView)

    # -- lines ------------------------------------------------------------------------------------
    def status(self, *parts: str | tuple[str, str]) -> None:
        """One line (it may wrap): plain strings and (text, style) pairs, never parsed as markup; their
        control characters (a store's words, an error quoting them) written out."""
        shown = [(visible(p[0]), p[1]) if isinstance(p, tuple) else visible(p) for p in parts]
        self.query_one("#probe-status", Line).update(Text.assemble(*shown))

    def busy(self, busy: bool) -> None:
        """The progress bar, shown (empty) while a fit runs."""
        bar = self.query_one("#probe-progress", ProgressBar)
        bar.display = busy
        if busy:
            bar.update(total=None, progress=0)

    def progress(self, done: int, total: int) -> None:
        self.query_one("#probe-progress", ProgressBar).update(total=max(total, 1), progress=done)

    def mark_stale(self, stale: bool) -> None:
        """The shown result is of other settings than the controls now say: said above it, until a fit
        or a cached result answers the new ones."""
        line = self.query_one("#probe-caption", Line)
        line.set_class(stale, "-stale")
        if self._caption is not None:
            line.update(Text.assemble(STALE, self._caption) if stale else self._caption)

    # -- the probes -------------------------------------------------------------------------------
    async def show(self, request: ProbeRequest, result: ProbeResult, emphasis: str, stale: bool) -> None:
        """A result: its caption (`stale`: the controls say other settings now), its table, and a chart
        per model."""
        from store.probe_tables import row_cells, table_columns

        self.models, self.results = result.models, result.agg
        self._caption = caption(request, result)
        self.mark_stale(stale)
        several = len(request.runs) > 1
        table = self.query_one("#probe-table", DataTable)
        table.clear(columns=True)
        table.add_columns("model", "layer", *(PROBE_LABELS[k] for k in table_columns()))
        for model in result.models:
            for _, r in result.agg[result.agg["model"] == model].iterrows():  # a store's model name: text
                table.add_row(Text(visible(model)), str(int(r["layer"])), *row_cells(r, several))
        box = self.query_one("#probe-charts", Horizontal)
        if [c.model for c in box.query_children(ProbeChart)] != result.models:
            await box.remove_children()
            await box.mount(*(ProbeChart(m) for m in result.models))
        self.draw(emphasis)

    def draw(self, emphasis: str) -> None:
        """One chart per model: the emphasised probes' accuracies and Δrep, Δmech across layers."""
        if self.results is None:
            return
        for chart in self.query_one("#probe-charts", Horizontal).query_children(ProbeChart):
            chart.draw(self.results, emphasis)
        self.lay_out()

    def switch_model(self) -> None:
        """`m`: the next model's chart, where one is shown at a time."""
        if self.models:
            shown = self._chart_model if self._chart_model in self.models else self.models[0]
            self._chart_model = self.models[(self.models.index(shown) + 1) % len(self.models)]
            self.lay_out()

    def lay_out(self) -> None:
        """Side by side where each gets MIN_CHART_WIDTH columns; else one, `m` switches."""
        box = self.query_one("#probe-charts", Horizontal)
        width = box.size.width or self.size.width
        one = len(self.models) > 1 and width < MIN_CHART_WIDTH * len(self.models)
        if self._chart_model not in self.models:
            self._chart_model = self.models[0] if self.models else None
        for chart in box.query_children(ProbeChart):
            chart.display = not one or chart.model == self._chart_model

    def on_resize(self) -> None:
        self.call_after_refresh(self.lay_out)

    def toggle_interventions(self) -> bool:
        """`i`: the interventions view in place of the charts and table, or back. Whether it is shown."""
        view = self.patches
        view.display = not view.display
        for wid in ("#probe-charts", "#probe-table"):
            self.query_one(wid).display = not view.display
        return view.display
