"""Figures from runs' own logged metrics (matplotlib, written as PNG).

`curves`: BIO, QA in-distribution and QA out-of-distribution exact match over training, one line
per strategy. Stage is drawn as one model's life: its BIO phase, then its QA phase, with a dotted
line where the QA phase starts. Runs of one configuration (differing only in seed) are drawn as
their mean with a band from the lowest to the highest seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import (
    Figure,  # no pyplot: no global state, no display, safe in any thread
)

from jobs.run.tables import load_groups
from jobs.words import CHAINS, MODEL_LABELS, SET_LABELS

COLORS = {"stage": "tab:blue", "mix": "tab:orange", "bio": "tab:green", "qa": "tab:purple"}


def strategy_curve(metrics: dict, strategy: str) -> tuple[np.ndarray, dict[str, np.ndarray], int | None] | None:
    """(steps, {set: accuracy}, step where the last phase starts or None) for one run, starting at
    step 0 from the untrained model; None when the run did not train that strategy or logged no curve."""
    train = metrics.get("train", {})
    chain = CHAINS[strategy]
    if any(not train.get(phase, {}).get("curve") for phase in chain):
        return None
    untrained = metrics.get("untrained", {})
    points = [(0, {s: untrained.get(s, {}).get("avg", 0.0) for s in SET_LABELS})]
    offset, switch = 0, None
    for phase in chain:
        if offset:
            switch = offset
        points += [(offset + p["step"], {s: p[s] for s in SET_LABELS}) for p in train[phase]["curve"]]
        offset += train[phase]["steps"]
    steps = np.array([s for s, _ in points])
    return steps, {s: np.array([v[s] for _, v in points]) for s in SET_LABELS}, switch


def curves(paths: list[Path], out: Path, title: str | None = None) -> Path:
    """Write the training-curve figure for `paths` to `out` (PNG) and return it."""
    groups = load_groups(paths)
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    drawn = 0
    for g, group in enumerate(groups):
        style = ("-", "--", ":", "-.")[g % 4]
        for strategy in CHAINS:
            runs = [c for m in group.metrics if (c := strategy_curve(m, strategy)) is not None]
            if not runs or (strategy == "bio" and any(strategy_curve(m, "stage") for m in group.metrics)):
                continue  # Stage's line already shows its BIO phase
            length = min(len(r[0]) for r in runs)
            steps = runs[0][0][:length]
            label = MODEL_LABELS[strategy] + (" (QA phase after the dotted line)" if strategy == "stage" else "")
            label += f" · {group.label}" if len(groups) > 1 else ""
            if len(runs) > 1:
                label += f" ({len(runs)} seeds)"
            for ax, eval_set in zip(axes, SET_LABELS):
                values = np.array([r[1][eval_set][:length] for r in runs])
                ax.plot(steps, values.mean(0), style, color=COLORS[strategy], label=label, lw=1.6, marker="o", ms=2.5)
                if len(runs) > 1:
                    ax.fill_between(steps, values.min(0), values.max(0), color=COLORS[strategy], alpha=0.2, lw=0)
                if runs[0][2] is not None:
                    ax.axvline(runs[0][2], color=COLORS[strategy], ls=":", lw=1)
            drawn += 1
    if not drawn:
        raise ValueError("no training curve logged in these runs (train.eval_every is 0?)")
    for ax, (eval_set, name) in zip(axes, SET_LABELS.items()):
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
