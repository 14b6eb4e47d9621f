"""The probe figure, like the paper's Figures 3 and 4: per model, the four probe accuracies across
layers (mean over runs, a band for the 95% bootstrap interval, or ± one standard deviation over runs
where the summary has no intervals), with Δrep and Δmech beneath; and the patching figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global state, no display, safe in any thread

from store.names import PROBE_ACCURACIES, PROBE_LABELS

STYLE = {
    "acc_qa_wqa": ("tab:blue", "-"),
    "acc_bio_wqa": ("tab:orange", "-"),
    "acc_qa_wbio": ("tab:green", "--"),
    "acc_bio_wbio": ("tab:red", "--"),
}


def _band(rows, key: str, fallback=None):
    """The band drawn around a line: the bootstrap interval where the summary has one, else ± one
    standard deviation over runs where there are several; None when there is neither (`fallback`:
    the line itself, so that callers taking a maximum always have a value)."""
    if f"{key}_lo" in rows and np.isfinite(rows[f"{key}_lo"].to_numpy()).all():
        return rows[f"{key}_lo"].to_numpy(), rows[f"{key}_hi"].to_numpy()
    std = rows[f"{key}_std"].fillna(0).to_numpy() if f"{key}_std" in rows else np.zeros(len(rows))
    if std.any():
        mean = rows[key].to_numpy()
        return mean - std, mean + std
    return None if fallback is None else (fallback, fallback)


def probe_figure(summary, out: Path, title: str, labels: dict[str, str] | None = None) -> Path:
    """summary: `store.probe_tables.summary(table)`; writes a PNG and returns its path. `labels` names the
    models in the panel titles (the caller's words; the store knows models only by their keys)."""
    models = list(dict.fromkeys(summary["model"]))
    fig = Figure(figsize=(4.6 * len(models), 6.4))
    axes = fig.subplots(2, len(models), squeeze=False, gridspec_kw={"height_ratios": [3, 1.3]}, sharex="col")
    for col, model in enumerate(models):
        rows = summary[summary["model"] == model]
        layers = rows["layer"].to_numpy()
        top, bottom = axes[0][col], axes[1][col]
        for key in PROBE_ACCURACIES:
            color, dash = STYLE[key]
            mean = rows[key].to_numpy()
            top.plot(layers, mean, dash, color=color, marker="o", ms=3, label=PROBE_LABELS[key])
            if (band := _band(rows, key)) is not None:
                top.fill_between(layers, *band, color=color, alpha=0.15, lw=0)
        top.set_title(
            f"{(labels or {}).get(model, model)} "
            f"({int(rows['runs'].iloc[0])} run{'s' if rows['runs'].iloc[0] > 1 else ''})"
        )
        top.set_ylim(-2, 102)
        top.grid(alpha=0.3)
        for key, color in (("delta_rep", "black"), ("delta_mech", "tab:purple")):
            mean = rows[key].to_numpy()
            bottom.plot(layers, mean, color=color, marker="o", ms=3, label=PROBE_LABELS[key])
            if (band := _band(rows, key)) is not None:
                bottom.fill_between(layers, *band, color=color, alpha=0.15, lw=0)
        bottom.set_xlabel("layer")
        bottom.grid(alpha=0.3)
        top_of = max(float(np.nanmax(_band(summary, k, summary[k].to_numpy())[1])) for k in ("delta_rep", "delta_mech"))
        bottom.set_ylim(0, max(10.0, float(top_of) * 1.1))  # one scale for every model: compare them
        if col == 0:
            top.set_ylabel("probe accuracy, %")
            bottom.set_ylabel("points")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    axes[1][-1].legend(fontsize=8, loc="upper left")
    for ax in axes[1]:
        ax.set_xticks(sorted(set(summary["layer"])))
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


# The patching figure: per model, exact match after each intervention across layers; the unpatched
# recall as dashed lines.
PATCH_STYLE = {
    "bio_long_qa": ("tab:blue", "-"),
    "bio_short_qa": ("tab:cyan", "-"),
    "qa_bio_long": ("tab:orange", "-"),
    "donor_rate": ("tab:purple", "-"),
    "identity_qa": ("tab:gray", ":"),
    "random_qa": ("black", ":"),
    "erase_qa": ("tab:red", "--"),
    "erase_bio": ("tab:brown", "--"),
    "erase_random_qa": ("tab:pink", "--"),
}


def patch_figure(summary, out: Path, title: str, labels: dict[str, str] | None = None) -> Path:
    """summary: `store.interventions.summary(frame)`; writes a PNG and returns its path."""
    from store.interventions import LABELS

    models = list(dict.fromkeys(summary["model"]))
    fig = Figure(figsize=(4.8 * len(models), 4.4))
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    for ax, model in zip(axes, models):
        rows = summary[summary["model"] == model]
        layers = rows["layer"].to_numpy()
        for key, (color, dash) in PATCH_STYLE.items():
            if rows[key].isna().all():
                continue
            ax.plot(layers, rows[key].to_numpy(), dash, color=color, marker="o", ms=3, label=LABELS[key])
            if (band := _band(rows, key)) is not None:
                ax.fill_between(layers, *band, color=color, alpha=0.12, lw=0)
        for key, color in (("qa", "tab:green"), ("bio", "tab:olive")):
            ax.axhline(float(rows[key].mean()), color=color, ls="--", lw=1, label=f"{LABELS[key]} unpatched")
        n = int(rows["runs"].iloc[0])
        ax.set_title(f"{(labels or {}).get(model, model)} ({n} run{'s' if n > 1 else ''})")
        ax.set_xlabel("layer patched")
        ax.set_xticks(sorted(set(layers.tolist())))
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exact match, %")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all, as every file factrecall writes; the format is the name's (.png, .pdf, .svg).
    partial = out.with_name(f".{out.stem}.partial{out.suffix or '.png'}")
    fig.savefig(partial, dpi=110)
    partial.replace(out)
    return out
