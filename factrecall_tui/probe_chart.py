"""One model's chart in the Probes pane: the probes' accuracies across layers with Δrep and Δmech
(the paper's Figures 3 and 4), in the colours of the PNG `factrecall-jobs probe` draws."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual_plotext import PlotextPlot

from jobs.shown import visible
from jobs.words import MODEL_LABELS
from store.names import PROBE_LABELS

if TYPE_CHECKING:
    import pandas as pd

EMPHASIS = (("both probes", "both"), ("W_QA (on QA h)", "wqa"), ("W_BIO (on BIO h)", "wbio"))
# Which accuracy lines each emphasis shows; Δrep and Δmech are always drawn.
EMPHASIS_LINES = {
    "both": ("acc_qa_wqa", "acc_bio_wqa", "acc_qa_wbio", "acc_bio_wbio"),
    "wqa": ("acc_qa_wqa", "acc_bio_wqa"),
    "wbio": ("acc_qa_wbio", "acc_bio_wbio"),
}
DELTAS = ("delta_rep", "delta_mech")
# The PNG's colours (store.figures.STYLE), in plotext's names; Δrep black there, white/grey here.
COLORS = {
    "acc_qa_wqa": "blue+",
    "acc_bio_wqa": "orange",
    "acc_qa_wbio": "green+",
    "acc_bio_wbio": "red+",
    "delta_rep": "gray+",
    "delta_mech": "magenta+",
}


class ProbeChart(PlotextPlot):
    """The chart of one model's rows of a probe summary (`store.probe_tables.summary`). It keeps what it
    draws: `chart_title`, `chart_layers` and `chart_series` (probe column -> its value per layer)."""

    def __init__(self, model: str) -> None:
        super().__init__(id=f"probe-chart-{model}", classes="probe-chart")
        self.model = model
        self.chart_title = ""
        self.chart_layers: list[int] = []
        self.chart_series: dict[str, list[float]] = {}

    def draw(self, summary: pd.DataFrame, emphasis: str) -> None:
        """This model's rows of `summary` (one per layer), the lines `emphasis` picks (a value of
        EMPHASIS) and the deltas."""
        rows = summary[summary["model"] == self.model]
        self.chart_layers = [int(x) for x in rows["layer"]]
        n = int(rows["runs"].iloc[0])
        self.chart_title = visible(f"{MODEL_LABELS.get(self.model, self.model)} ({n} run{'s' if n > 1 else ''})")
        self.chart_series = {k: [float(v) for v in rows[k]] for k in EMPHASIS_LINES[emphasis] + DELTAS}
        plt = self.plt
        plt.clear_figure()
        plt.title(self.chart_title)
        plt.xlabel("layer")
        plt.ylim(0, 100)
        plt.yticks([0, 25, 50, 75, 100])
        plt.xticks(self.chart_layers[:: -(-len(self.chart_layers) // 12)])  # at most about 12 ticks
        for k, values in self.chart_series.items():
            plt.plot(self.chart_layers, values, label=PROBE_LABELS[k], color=COLORS[k], marker="braille")
        self.refresh()
