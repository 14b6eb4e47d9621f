"""The study's PNG figures, from report.json's numbers (`report.collect`): Figure 1 and Figure 5 beside
the paper's, the probe figures (3 and 4) for every attribute, the top-layer deltas, and the
representation over training."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global state, safe in any thread

from jobs.run.files import atomic_write_bytes
from jobs.study import claims
from jobs.study.plan import ACCURACY_COLUMNS, PAPER_MODELS, REPORT_MODELS
from jobs.words import ATTRIBUTE_LABELS, ATTRIBUTES, BIO_FORMATS, FORMAT_LABELS, MODEL_LABELS, SET_LABELS
from store.figures import probe_figure
from store.names import PROBE_COLUMNS
from store.probe_tables import summary


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, out: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(out, buf.getvalue())


def _finish(fig, legend_ax, title: str, folder: Path, name: str, names: dict[str, str]) -> None:
    """Legend, title, and the PNG `name` written into `folder` (and listed in `names`)."""
    legend_ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, folder / f"{name}.png")
    names[name] = f"{name}.png"


def figures(data: dict, folder: Path) -> dict[str, str]:
    """Write every PNG into `folder`; returns {figure: file name} for the markdown."""
    acc, names = data["accuracy"], {}
    labels = ["Ave", *(ATTRIBUTE_LABELS[a] for a in ATTRIBUTES)]
    fig, ax = _figure(9, 3.6)
    ax = ax[0][0]
    x = np.arange(len(labels))
    bars = [
        ("Stage, here", acc["stage"]["qa_out"], None, "tab:blue", ""),
        ("Stage, paper", None, claims.PAPER_FIGURE1["stage"], "tab:blue", "//"),
        ("Mix, here", acc["mix"]["qa_out"], None, "tab:orange", ""),
        ("Mix, paper", None, claims.PAPER_FIGURE1["mix"], "tab:orange", "//"),
    ]
    for i, (label, ours, paper, color, hatch) in enumerate(bars):
        values = [ours[c]["mean"] for c in ACCURACY_COLUMNS] if ours else list(paper)
        err = [ours[c]["std"] for c in ACCURACY_COLUMNS] if ours else None
        ax.bar(
            x + (i - 1.5) * 0.2,
            values,
            0.2,
            yerr=err,
            label=label,
            color=color,
            alpha=1.0 if ours else 0.45,
            hatch=hatch,
            edgecolor="white" if ours else color,
            capsize=2,
        )
    ax.set_xticks(x, labels)
    ax.set_ylabel("QA out exact match, %")
    ax.set_ylim(0, 105)
    ax.legend(ncols=4, fontsize=8, loc="upper right")
    ax.set_title("Figure 1: QA out-of-distribution, here (solid, ± std over seeds) and in the paper (hatched)")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, folder / "figure1.png")
    names["figure1"] = "figure1.png"

    models = [m for m in REPORT_MODELS if m in acc]
    fig, axes = _figure(9, 3.2, 1, 3)
    for k, (s, label) in enumerate(SET_LABELS.items()):
        ax = axes[0][k]
        xs = np.arange(len(models))
        ax.bar(
            xs - 0.2,
            [acc[m][s]["avg"]["mean"] for m in models],
            0.4,
            yerr=[acc[m][s]["avg"]["std"] for m in models],
            color="tab:gray",
            label="here",
            capsize=2,
        )
        ax.bar(
            xs + 0.2,
            [claims.PAPER_FIGURE5[m][k] for m in models],
            0.4,
            color="tab:gray",
            alpha=0.4,
            hatch="//",
            edgecolor="tab:gray",
            label="paper",
        )
        ax.set_xticks(xs, [MODEL_LABELS[m].replace(" vote", "").replace("-tuned", "") for m in models], fontsize=8)
        ax.set_title(label)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    _finish(fig, axes[0][0], "Figure 5: exact match, %", folder, "figure5", names)

    (folder / "probes").mkdir(exist_ok=True)
    for fmt in BIO_FORMATS:
        for a in ATTRIBUTES:
            frames, bounds = [], {}
            for model, rows in data["probes"][fmt][a].items():  # Stage, Mix, and the untrained baseline
                for row in rows:
                    bounds[(model, row["layer"])] = {c: row.get(f"{c}_ci") for c in PROBE_COLUMNS}
                    for i, run in enumerate(row["runs"]):
                        frames.append(
                            {
                                "run": run,
                                "model": model,
                                "layer": row["layer"],
                                **{c: row[c]["values"][i] for c in PROBE_COLUMNS},
                            }
                        )
            agg = summary(pd.DataFrame(frames))
            for c in PROBE_COLUMNS:  # the bands: the bootstrap intervals over people and seeds
                ci = [bounds[(m, k)][c] for m, k in zip(agg["model"], agg["layer"])]
                if all(v is not None for v in ci):
                    agg[f"{c}_lo"], agg[f"{c}_hi"] = [v[0] for v in ci], [v[1] for v in ci]
            file = f"probes/{a}-{fmt}.png"
            probe_figure(
                agg, folder / file, f'Accuracy for the first token of "{a}", BIO = {FORMAT_LABELS[fmt]}', MODEL_LABELS
            )
            names[f"probe-{a}-{fmt}"] = file

    top = claims.top_layers(data["layers"])
    fig, axes = _figure(9, 5, 2, 2)
    xs = np.arange(len(ATTRIBUTES))
    for r, fmt in enumerate(BIO_FORMATS):
        for c, column in enumerate(("delta_rep", "delta_mech")):
            ax = axes[r][c]
            for i, model in enumerate(PAPER_MODELS):
                per_seed = [
                    [
                        np.mean([data["probes"][fmt][a][model][layer][column]["values"][s] for layer in top])
                        for s in range(len(data["runs"]))
                    ]
                    for a in ATTRIBUTES
                ]
                ax.bar(
                    xs + (i - 0.5) * 0.4,
                    [np.mean(v) for v in per_seed],
                    0.4,
                    yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in per_seed],
                    capsize=2,
                    color="tab:blue" if model == "stage" else "tab:orange",
                    label=MODEL_LABELS[model],
                )
            ax.set_xticks(xs, [ATTRIBUTE_LABELS[a] for a in ATTRIBUTES], fontsize=8)
            ax.set_title(f"{'Δrep' if column == 'delta_rep' else 'Δmech'}, BIO = {FORMAT_LABELS[fmt]}", fontsize=10)
            ax.set_ylim(0, 100)
            ax.grid(axis="y", alpha=0.3)
    _finish(
        fig,
        axes[0][0],
        "Top-layer Δrep and Δmech per attribute (BIO order), mean ± std over seeds",
        folder,
        "deltas",
        names,
    )

    traj = data["trajectory"]
    if traj:
        fig, axes = _figure(11, 3.4, 1, 3)
        for k, (key, label) in enumerate(
            (
                ("qa_out", "QA out exact match, %"),
                ("delta_rep", "Δrep, top layer"),
                ("cosine", "cos(hBIO_long, hQA), top layer"),
            )
        ):
            ax = axes[0][k]
            for strategy, color in (("stage", "tab:blue"), ("mix", "tab:orange")):
                pts = traj[strategy]
                xs_ = [p["x"] for p in pts]
                mean = np.array([p[key]["mean"] for p in pts])
                std = np.array([p[key]["std"] for p in pts])
                ax.plot(xs_, mean, marker="o", ms=3, color=color, label=MODEL_LABELS[strategy])
                ax.fill_between(xs_, mean - std, mean + std, color=color, alpha=0.15, lw=0)
            ax.axvline(0, color="gray", ls=":", lw=1)
            ax.set_xlabel("progress (Stage's BIO phase: -1 → 0)")
            ax.set_title(label, fontsize=10)
            ax.grid(alpha=0.3)
        _finish(
            fig,
            axes[0][0],
            "Over training: accuracy and the representation, mean ± std over seeds (BIO_long, mean over attributes)",
            folder,
            "trajectory",
            names,
        )
    if data.get("interventions"):
        from store.figures import patch_figure
        from store.interventions import COLUMNS
        from store.interventions import summary as patch_summary

        iv = data["interventions"]
        frames = [
            {"run": i, "model": model, "layer": row["layer"], **{c: row[c]["values"][i] for c in COLUMNS}}
            for model, rows in iv["layers"].items()
            for row in rows
            for i in range(len(row["qa"]["values"]))
        ]
        patch_figure(
            patch_summary(pd.DataFrame(frames)),
            folder / "patch.png",
            f'Patching resid_mid at the last prompt token: "{iv["attribute"]}", {iv["split"]} people',
            MODEL_LABELS,
        )
        names["patch"] = "patch.png"
    return names
