"""Figures from runs' own logged metrics (matplotlib, written as PNG).

`curves`: BIO, QA in-distribution and QA out-of-distribution exact match over training, one line
per strategy. Stage is drawn as one model's life: its BIO phase, then its QA phase, with a dotted
line where the QA phase starts. Runs of one configuration (differing only in seed) are drawn as
their mean with a band from the lowest to the highest seed.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import (
    Figure,  # no pyplot: no global state, no display, safe in any thread
)

from jobs.run.tables import group_curves, load_groups
from jobs.words import MODEL_LABELS, SET_LABELS

COLORS = {"stage": "tab:blue", "mix": "tab:orange", "bio": "tab:green", "qa": "tab:purple"}


def curves(paths: list[Path], out: Path, title: str | None = None) -> Path:
    """Write the training-curve figure for `paths` to `out` (PNG) and return it."""
    groups = load_groups(paths)
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    drawn = 0
    for g, group in enumerate(groups):
        style = ("-", "--", ":", "-.")[g % 4]
        for strategy, (steps, per_set, switch) in group_curves(group.metrics).items():
            seeds = len(next(iter(per_set.values())))
            label = MODEL_LABELS[strategy] + (" (QA phase after the dotted line)" if strategy == "stage" else "")
            label += f" · {group.label}" if len(groups) > 1 else ""
            if seeds > 1:
                label += f" ({seeds} seeds)"
            for ax, eval_set in zip(axes, SET_LABELS):
                values = per_set[eval_set]
                ax.plot(steps, values.mean(0), style, color=COLORS[strategy], label=label, lw=1.6, marker="o", ms=2.5)
                if seeds > 1:
                    ax.fill_between(steps, values.min(0), values.max(0), color=COLORS[strategy], alpha=0.2, lw=0)
                if switch is not None:
                    ax.axvline(switch, color=COLORS[strategy], ls=":", lw=1)
            drawn += 1
    if not drawn:
        raise ValueError("no training curve logged in these runs (train.eval_every is 0?)")
    for ax, name in zip(axes, SET_LABELS.values()):
        ax.set_title(f"{name} exact match")
        ax.set_xlabel("optimizer step")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exact match (%)")
    axes[-1].legend(loc="best", fontsize=8)
    if title is None:
        title = groups[0].label if len(groups) == 1 else "training curves"
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix or '.png'}")  # the format is the name's
    fig.savefig(partial, dpi=120)
    partial.replace(out)
    return out
