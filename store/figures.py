"""The probe figure, like the paper's Figures 3 and 4: per model, the four probe accuracies across
layers (mean over runs, a band for ± one standard deviation when there are several), with Δrep and
Δmech beneath."""

from __future__ import annotations

from pathlib import Path

from store.probes import ACCURACIES, LABELS

STYLE = {"acc_qa_wqa": ("tab:blue", "-"), "acc_bio_wqa": ("tab:orange", "-"),
         "acc_qa_wbio": ("tab:green", "--"), "acc_bio_wbio": ("tab:red", "--")}
NAMES = {"untrained": "Untrained", "bio": "BIO-tuned", "stage": "Stage-tuned", "mix": "Mix-tuned", "qa": "QA-tuned"}


def probe_figure(summary, out: Path, title: str) -> Path:
    """summary: `store.probes.summary(table)`; writes a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(summary["model"]))
    fig, axes = plt.subplots(2, len(models), figsize=(4.6 * len(models), 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3]}, sharex="col")
    for col, model in enumerate(models):
        rows = summary[summary["model"] == model]
        layers = rows["layer"].to_numpy()
        top, bottom = axes[0][col], axes[1][col]
        for key in ACCURACIES:
            color, dash = STYLE[key]
            mean, std = rows[key].to_numpy(), rows[f"{key}_std"].fillna(0).to_numpy()
            top.plot(layers, mean, dash, color=color, marker="o", ms=3, label=LABELS[key])
            if std.any():
                top.fill_between(layers, mean - std, mean + std, color=color, alpha=0.15, lw=0)
        top.set_title(f"{NAMES.get(model, model)} ({int(rows['runs'].iloc[0])} run{'s' if rows['runs'].iloc[0] > 1 else ''})")
        top.set_ylim(-2, 102)
        top.grid(alpha=0.3)
        for key, color in (("delta_rep", "black"), ("delta_mech", "tab:purple")):
            mean, std = rows[key].to_numpy(), rows[f"{key}_std"].fillna(0).to_numpy()
            bottom.plot(layers, mean, color=color, marker="o", ms=3, label=LABELS[key])
            if std.any():
                bottom.fill_between(layers, mean - std, mean + std, color=color, alpha=0.15, lw=0)
        bottom.set_xlabel("layer")
        bottom.grid(alpha=0.3)
        top_of = (summary[["delta_rep", "delta_mech"]].to_numpy() + summary[["delta_rep_std", "delta_mech_std"]].fillna(0).to_numpy()).max()
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
