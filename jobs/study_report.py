"""The reproduce report: every number of the study gathered from its run folders (`collect`, written as
report.json), the paper's claims judged on them (`jobs/claims.py`), and report.md with PNG figures
beside it, in the study folder WORKSPACE/reproduce/NAME/.

Numbers come from three places, each named in the report: a run's metrics.json (exact match), its
activation store's cached probe sweeps (RUN/activations.zarr, group probes/), and its trajectory
store's (RUN/trajectory.zarr). Nothing here trains or fits: `jobs.reproduce.fit_probes` has filled
the caches, and a sweep missing from them is fitted on the spot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from jobs import claims as C
from jobs.report import ATTRIBUTE_LABELS, SET_LABELS
from jobs.reproduce import (
    BIO_FORMATS,
    PAPER_MODELS,
    TRAJECTORY_FORMAT,
    Study,
    check_complete,
)
from jobs.runfolder import atomic_write_bytes, atomic_write_json, read_metrics
from jobs.spec import ATTRIBUTES

REPORT_MODELS = ("majority", "untrained", "bio", "stage", "mix")
COLUMNS = ("avg", *ATTRIBUTES)
PROBE_COLUMNS = ("acc_qa_wqa", "acc_bio_wqa", "acc_qa_wbio", "acc_bio_wbio", "delta_rep", "delta_mech", "cosine", "cka")
TRAJECTORY_COLUMNS = ("delta_rep", "delta_mech", "cosine", "cka", "acc_qa_wqa", "acc_bio_wqa")
NAMES = {"stage": "Stage", "mix": "Mix", "bio": "BIO-tuned", "untrained": "Untrained", "majority": "Majority vote"}
FORMAT_NAMES = {"bio_long": "BIO_long", "bio_short": "BIO_short"}


def _stats(values: list[float], ddof: int = 0) -> dict:
    values = [float(v) for v in values]
    return {"values": values, "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=ddof)) if len(values) > ddof else 0.0}


# -- collect -------------------------------------------------------------------------------------
def collect(study: Study) -> dict:
    """Every number the report shows, per seed and as mean and std, with where it came from."""
    import store
    from store.probes import ProbeSettings, table

    check_complete(study)
    workspace = study.folder.parent.parent
    runs = [{"name": p.name, "path": str(p.relative_to(workspace)) if p.is_relative_to(workspace) else str(p),
             "seed": spec.seed} for spec, p in study.runs]
    metrics = [read_metrics(p) for p in study.paths]
    spec = study.runs[0][0]
    data: dict = {"study": study.name, "preset": spec.preset, "workspace": str(workspace), "runs": runs, "created": time.strftime("%Y-%m-%d %H:%M"),
                  "setup": _setup(study, metrics)}

    data["accuracy"] = {
        model: {s: {c: _stats([m[model][s][c] for m in metrics]) for c in COLUMNS} for s in SET_LABELS}
        for model in REPORT_MODELS if all(model in m for m in metrics)
    }

    mains = [store.open(p) for p in study.paths]
    layers = mains[0].layers
    data["layers"] = layers
    probes: dict = {}
    for fmt in BIO_FORMATS:
        for attribute in ATTRIBUTES:
            df = table(mains, list(PAPER_MODELS), ProbeSettings(attribute=attribute, bio=fmt))
            probes.setdefault(fmt, {})[attribute] = {
                model: [{"layer": int(layer), **{c: _stats(rows[c].tolist(), ddof=1) for c in PROBE_COLUMNS},
                         "runs": rows["run"].tolist(), "n_classes": int(rows["n_classes"].iloc[0]),
                         "n_train": int(rows["n_train"].iloc[0]), "n_test": int(rows["n_test"].iloc[0])}
                        for layer, rows in df[df["model"] == model].groupby("layer", sort=True)]
                for model in PAPER_MODELS}
    data["probes"] = probes
    data["trajectory"] = _trajectory(study, metrics, mains, layers)
    data["timing"] = _timing(study)
    data["claims"] = [c.to_json() for c in judge(data)]
    return data


def _setup(study: Study, metrics: list[dict]) -> dict:
    spec = study.runs[0][0]
    trained = metrics[0]["train"]
    reused = sorted({f"{p.name}: {phase} from {m['train'][phase]['reused_from']}" for p, m in zip(study.paths, metrics)
                     for phase in m["train"] if "reused_from" in m["train"][phase]})
    people = spec.data.people
    qa_in = round(people * spec.data.qa_in_fraction)
    return {"people": people, "qa_in": qa_in, "qa_out": people - qa_in, "model": spec.model.path or "built-in Llama",
            "layers": spec.model.layers, "hidden": spec.model.hidden,
            "parameters": read_done(study.paths[0], "init").get("parameters"),
            "phases": {ph: {"steps": trained[ph]["steps"], "settings": getattr(spec.train, "qa" if ph == "stage" else ph).model_dump()}
                       for ph in ("bio", "stage", "mix")},
            "snapshots": spec.train.snapshots, "reused": reused}


def read_done(path: Path, step: str) -> dict:
    file = path / "done" / f"{step}.json"
    return json.loads(file.read_text()) if file.exists() else {}


def _timing(study: Study) -> dict:
    file = study.folder / "timing.json"
    parts = json.loads(file.read_text()) if file.exists() else {}
    return {"parts": parts, "total_s": round(sum(parts.values()), 1)}


def _top(rows: list[dict], layers: list[int], column: str) -> float:
    return float(np.mean([rows[layer][column] for layer in layers]))


def _trajectory(study: Study, metrics: list[dict], mains: list, layers: int) -> dict:
    """Per strategy (Stage, Mix), the checkpoints along training in order, each with its exact match
    and the top-layer probe numbers (BIO_long, averaged over the attributes), mean over seeds.
    `x` is progress through the phase that trains on QA (Stage: its QA phase; Mix: its only phase),
    0 at its start and 1 at its end; Stage's BIO phase runs from -1 to 0."""
    import store
    from jobs.dump import TRAJECTORY_NAME
    from store.probes import ProbeSettings, sweep

    if not study.runs[0][0].train.snapshots:
        return {}
    top = C.top_layers(layers)
    chains = {"stage": (("bio", -1.0), ("stage", 0.0)), "mix": (("mix", 0.0),)}
    per_seed: dict[str, list[list[dict]]] = {s: [] for s in chains}
    for path, m, main in zip(study.paths, metrics, mains):
        traj = store.open(path / TRAJECTORY_NAME)
        for strategy, chain in chains.items():
            points = [("untrained", chain[0][0], 0, main, m["untrained"], chain[0][1])]
            for phase, offset in chain:
                steps = m["train"][phase]["steps"]
                for name in traj.models:
                    if name.split("@")[0] == phase:
                        step = int(name.split("@")[1])
                        points.append((name, phase, step, traj, m["snapshots"][name], offset + step / steps))
                points.append((phase, phase, steps, main, m[phase], offset + 1.0))
            seq = []
            for name, phase, step, s, acc, x in points:
                rows = {a: sweep(s, name, ProbeSettings(attribute=a, bio=TRAJECTORY_FORMAT)) for a in ATTRIBUTES}
                point = {"model": name, "phase": phase, "step": step, "x": x,
                         **{k: acc[k]["avg"] for k in SET_LABELS},
                         **{c: float(np.mean([_top(rows[a], top, c) for a in ATTRIBUTES])) for c in TRAJECTORY_COLUMNS},
                         "job_delta_rep": _top(rows["job"], top, "delta_rep")}
                seq.append(point)
            per_seed[strategy].append(seq)
    out = {}
    for strategy, seqs in per_seed.items():
        n = min(len(s) for s in seqs)  # the same count in every seed (snapshots per phase are fixed)
        out[strategy] = [{"models": [seq[i]["model"] for seq in seqs], "phase": seqs[0][i]["phase"],
                          "x": float(np.mean([seq[i]["x"] for seq in seqs])),
                          "step": round(float(np.mean([seq[i]["step"] for seq in seqs]))),
                          **{k: _stats([seq[i][k] for seq in seqs], ddof=1)
                             for k in (*SET_LABELS, *TRAJECTORY_COLUMNS, "job_delta_rep")}} for i in range(n)]
    out["onsets"] = onsets(out)
    return out


def onset(xs: list[float], ys: list[float]) -> float | None:
    """The first x at which y has made half of its change from the first point to the last (linear
    between checkpoints); None when it does not change."""
    change = ys[-1] - ys[0]
    if abs(change) < 1e-9:
        return None
    target = ys[0] + change / 2
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if (y1 - target) * np.sign(change) >= 0:
            return float(x0 + (x1 - x0) * ((target - y0) / (y1 - y0) if y1 != y0 else 1.0))
    return float(xs[-1])


def first_reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """The first x at which y reaches `target` (from below for a positive target, from above for a
    negative one; linear between points); xs[0] if it starts there, None if it never does."""
    sign = 1.0 if target >= 0 else -1.0
    for i, (x, y) in enumerate(zip(xs, ys)):
        if (y - target) * sign >= 0:
            if i == 0:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (x - x0) * (target - y0) / (y - y0))
    return None


def onsets(traj: dict) -> dict:
    """Over the QA-trained phase (x from 0 to 1) of each strategy: when QA-out accuracy, the
    alignment (cosine) and Δrep make half their change; and, at matching progress, the Mix - Stage
    gap in each at every checkpoint and when it first reaches half its final size."""
    out: dict = {}
    qa_part = {s: [p for p in traj[s] if p["x"] >= 0] for s in ("stage", "mix")}
    for s, points in qa_part.items():
        xs = [p["x"] for p in points]
        out[s] = {k: onset(xs, [p[k]["mean"] for p in points]) for k in ("qa_out", "cosine", "delta_rep")}
    xs = [p["x"] for p in qa_part["mix"]]
    if len(qa_part["stage"]) == len(xs):
        gaps = {k: [m[k]["mean"] - s[k]["mean"] for m, s in zip(qa_part["mix"], qa_part["stage"])]
                for k in ("qa_out", "cosine", "delta_rep")}
        out["gap_values"] = gaps
        out["gap"] = {k: first_reach(xs, v, v[-1] / 2) if v[-1] else None for k, v in gaps.items()}
        out["gap_x"] = xs
    return out


# -- claims ----------------------------------------------------------------------------------------
def judge(data: dict) -> list[C.Claim]:
    acc = data["accuracy"]
    top = C.top_layers(data["layers"])

    def per_seed_top(fmt: str, attribute: str, model: str, column: str) -> list[float]:
        rows = data["probes"][fmt][attribute][model]
        return [float(np.mean([rows[layer][column]["values"][i] for layer in top])) for i in range(len(rows[0][column]["values"]))]

    long_rep = {a: {m: per_seed_top("bio_long", a, m, "delta_rep") for m in PAPER_MODELS} for a in ATTRIBUTES}
    stage_mech = [(row["delta_mech"]["mean"], row["layer"]) for row in data["probes"]["bio_long"]["job"]["stage"]]
    short = {m: {c: float(np.mean(per_seed_top("bio_short", "job", m, c))) for c in PROBE_COLUMNS[:6]} for m in PAPER_MODELS}
    return [
        C.claim1(acc["stage"]["qa_out"]["avg"]["values"], acc["mix"]["qa_out"]["avg"]["values"]),
        C.claim2({m: {s: acc[m][s]["avg"]["values"] for s in ("bio", "qa_in")} for m in PAPER_MODELS}),
        C.claim3([acc["stage"]["qa_out"][a]["mean"] for a in ATTRIBUTES], [acc["mix"]["qa_out"][a]["mean"] for a in ATTRIBUTES]),
        C.claim4(long_rep, max(stage_mech), data["layers"]),
        C.claim5(short),
    ]


# -- markdown --------------------------------------------------------------------------------------
def _cell(stat: dict, digits: int = 1) -> str:
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if len(stat["values"]) > 1 else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def render(data: dict, figures: dict[str, str]) -> str:
    setup, n = data["setup"], len(data["runs"])
    seeds = ", ".join(str(r["seed"]) for r in data["runs"])
    acc = data["accuracy"]
    lines = [f"# Reproduction report: `{data['study']}` ({data['preset']} preset, {n} seed{'s' * (n > 1)})", "",
             f"*Understanding Fact Recall in Language Models: Why Two-Stage Training Encourages Memorization but Mixed "
             f"Training Teaches Knowledge*, reproduced by `factrecall-jobs reproduce` on {data['created']}. "
             f"{setup['people']:,} people ({setup['qa_in']:,} QA-in, {setup['qa_out']:,} QA-out); model: "
             f"{setup['model']}, {setup['layers']} layers, hidden {setup['hidden']}"
             + (f", {setup['parameters']:,} parameters" if setup.get("parameters") else "") + "; "
             + ", ".join(f"{ph} {v['steps']:,} steps at lr {v['settings']['lr']:g}" for ph, v in setup["phases"].items())
             + f"; seeds {seeds}. Means ± std over seeds (exact match: population std, as `factrecall-jobs show`; "
               "probes: sample std, as `factrecall-jobs probe`).", ""]
    timing = data["timing"]
    if timing["parts"]:
        runs_s = sum(v for k, v in timing["parts"].items() if k.startswith("run "))
        lines += [f"**Time:** {_duration(timing['total_s'])} of wall clock in all ({_duration(runs_s)} training, "
                  f"evaluating and dumping the {n} runs, {_duration(timing['parts'].get('probes', 0))} fitting probes), "
                  "summed over every invocation of the command (`timing.json`)."
                  + (" Some phases were reused from earlier runs, so this is less than a study from scratch: "
                     + "; ".join(setup["reused"]) + "." if setup["reused"] else ""), ""]

    lines += ["## The paper's claims", "",
              *_table(["", "claim", "paper", "measured here", "verdict"],
                      [[f"({c['id']})", c["short"], c["paper"], c["measured"], f"**{c['verdict']}**"] for c in data["claims"]]), ""]
    for c in data["claims"]:
        lines.append(f"- ({c['id']}) *Rule:* {c['rule']}." + "".join(f" {note}." for note in c["notes"]))
    lines.append("")

    # Figure 1
    header = ["model", "Ave", *(ATTRIBUTE_LABELS[a] for a in ATTRIBUTES)]
    rows = []
    for model in ("stage", "mix"):
        rows.append([f"{NAMES[model]}, here", *(_cell(acc[model]["qa_out"][c]) for c in COLUMNS)])
        rows.append([f"{NAMES[model]}, paper", *(f"{v:.1f}" for v in C.PAPER_FIGURE1[model])])
    for model in ("bio", "majority"):
        if model in acc:
            rows.append([f"{NAMES[model]}, here", *(_cell(acc[model]["qa_out"][c]) for c in COLUMNS)])
    lines += ["## Figure 1: QA out-of-distribution exact match (%)", "", *_table(header, rows), "",
              f"![Figure 1]({figures['figure1']})", ""]

    # Figure 5
    paper_names = {"untrained": "Vanilla Llama", "stage": "QA-tuned"}
    rows = []
    for model in REPORT_MODELS:
        if model in acc:
            rows.append([NAMES[model], *(_cell(acc[model][s]["avg"]) for s in SET_LABELS),
                         *(f"{v:.1f}" for v in C.PAPER_FIGURE5[model]),
                         paper_names.get(model, "")])
    lines += ["## Figure 5: BIO, QA in-distribution and QA out-of-distribution exact match (%)", "",
              *_table(["model", *(f"{label}, here" for label in SET_LABELS.values()),
                       *(f"{label}, paper" for label in SET_LABELS.values()), "paper's name"], rows), "",
              ("The paper's untrained model is a pretrained Llama-3.2-3B; here it is the built-in model's random "
               "initialisation." if setup["model"] == "built-in Llama" else ""), "",
              f"![Figure 5]({figures['figure5']})", ""]

    # Figures 3 and 4
    top = C.top_layers(data["layers"])
    top_text = f"layer {top[0]}" if len(top) == 1 else f"layers {top[0]}–{top[-1]}"
    for fmt, fig_name, paper_text in (
            ("bio_long", "Figure 3", ("Stage's Δrep significantly larger than Mix's; both Δmech relatively small, "
                                      "Stage's ≈ 20 at layer 24 of 28.")),
            ("bio_short", "Figure 4", "both models' Δrep much smaller (< 10) and Δmech nearly zero.")):
        rows = []
        for a in ATTRIBUTES:
            cells = [a]
            for model in PAPER_MODELS:
                probe_rows = data["probes"][fmt][a][model]
                for c in ("acc_qa_wqa", "acc_bio_wqa", "acc_bio_wbio", "delta_rep", "delta_mech", "cosine"):
                    mean = np.mean([probe_rows[layer][c]["mean"] for layer in top])
                    cells.append(f"{mean:.2f}" if c == "cosine" else f"{mean:.1f}")
            rows.append(cells)
        header = ["attribute", *(f"{NAMES[m]} {label}" for m in PAPER_MODELS
                                 for label in ("Acc(hQA·WQA)", "Acc(hBIO·WQA)", "Acc(hBIO·WBIO)", "Δrep", "Δmech", "cos"))]
        n_classes = {a: data["probes"][fmt][a]["stage"][0]["n_classes"] for a in ATTRIBUTES}
        lines += [f"## {fig_name}: probes with BIO = {FORMAT_NAMES[fmt]}, every attribute", "",
                  (f"Linear probes per layer on resid_mid (residual stream + attention output), trained on the QA-in "
                   f"people and scored on the QA-out people; {top_text} (the top quarter), mean over seeds. Classes: the "
                   f"attribute's first tokens that occur ({', '.join(f'{a} {k}' for a, k in n_classes.items())}). "
                   f"**Paper** (job, Llama-3.2-3B): {paper_text}"), "", *_table(header, rows), "",
                  f"![{fig_name}, job]({figures[f'probe-job-{fmt}']})", "",
                  "Every attribute: " + ", ".join(f"[{a}]({figures[f'probe-{a}-{fmt}']})" for a in ATTRIBUTES) + ".", ""]
    lines += [f"![Δrep and Δmech at the top, every attribute]({figures['deltas']})", ""]

    # Over training
    traj = data["trajectory"]
    if traj:
        lines += ["## Beyond the paper: the representation over training", "",
                  (f"{setup['snapshots']} checkpoints along every phase (`train.snapshots`), each evaluated and its "
                   "activations dumped (RUN/trajectory.zarr) and probed with BIO_long; the top-layer Δrep, Δmech and "
                   "cosine of hBIO and hQA, averaged over the six attributes, beside QA out-of-distribution exact match. "
                   "Progress 0 → 1 is the phase that trains on QA (Stage's QA phase, Mix's only phase); Stage's BIO "
                   "phase is -1 → 0."), ""]
        rows = []
        for strategy in ("stage", "mix"):
            for p in traj[strategy]:
                rows.append([NAMES[strategy], p["models"][0].split("@")[0] if "@" not in p["models"][0] else p["models"][0],
                             f"{p['x']:+.2f}", *(_cell(p[k]) for k in SET_LABELS), _cell(p["delta_rep"]),
                             _cell(p["delta_mech"]), _cell(p["cosine"], digits=2), _cell(p["cka"], digits=2)])
        lines += _table(["model", "checkpoint (seed 0's)", "progress", "BIO", "QA in", "QA out", "Δrep", "Δmech",
                         "cos", "CKA"], rows)
        lines += ["", *trajectory_findings(traj), "", f"![Over training]({figures['trajectory']})", ""]

    lines += ["## Where every number comes from", "",
              "`report.json` beside this file holds every number above with its per-seed values. Each seed is one run "
              f"folder in the workspace (`{data['workspace']}`): "
              + ", ".join(f"seed {r['seed']} `{r['path']}`" for r in data["runs"]) + ". In a run folder, exact match "
              "is in `metrics.json` (`MODEL.SET.avg` or `.ATTRIBUTE`; a snapshot's under `snapshots`), and each probe "
              "sweep is cached in `activations.zarr/probes/` or `trajectory.zarr/probes/`: "
              "`factrecall-jobs probe RUN --attribute job --bio long` prints one from its cache, "
              "`factrecall-jobs probe RUN/trajectory.zarr --models stage@163 --attribute job` a snapshot's."]
    return "\n".join(lines) + "\n"


def trajectory_findings(traj: dict) -> list[str]:
    """What the checkpoints say, computed: where each quantity makes half its change, and whether the
    alignment gap between Mix and Stage opens before the accuracy gap."""
    o = traj["onsets"]

    def at(x: float | None) -> str:
        return "never (no change)" if x is None else f"{x:.2f}"

    out = []
    for s in ("stage", "mix"):
        out.append(f"- {NAMES[s]}: QA out makes half its change at progress {at(o[s]['qa_out'])}, the cosine at "
                   f"{at(o[s]['cosine'])}, Δrep at {at(o[s]['delta_rep'])}.")
    gap = o.get("gap")
    if gap:
        values = o["gap_values"]
        stage0 = traj["stage"]
        out.append("- Mix − Stage at matching progress (" + ", ".join(f"{x:.2f}" for x in o["gap_x"]) + "): cosine "
                   + ", ".join(f"{v:+.2f}" for v in values["cosine"]) + "; QA out "
                   + ", ".join(f"{v:+.1f}" for v in values["qa_out"]) + ".")
        out.append(f"- The cosine gap reaches half its final size at progress {at(gap['cosine'])}, the QA-out gap at "
                   f"{at(gap['qa_out'])} (linear between checkpoints).")
        if values["cosine"][0] >= values["cosine"][-1] / 2 > 0:
            out.append(f"- The alignment gap is there before either model has seen a QA pair: Stage's BIO phase took "
                       f"its cosine from {stage0[0]['cosine']['mean']:.2f} (untrained) to "
                       f"{next(p for p in stage0 if p['x'] == 0.0)['cosine']['mean']:.2f}.")
        if gap["cosine"] is not None and gap["qa_out"] is not None:
            if gap["cosine"] < gap["qa_out"] - 1e-9:
                verdict = "Mix's and Stage's representations part before their QA-out accuracies do"
            elif gap["cosine"] > gap["qa_out"] + 1e-9:
                verdict = "the accuracy gap opens first and the alignment gap follows it"
            else:
                verdict = "the two gaps open together at this resolution"
            out.append(f"- So, {verdict}.")
    return out


# -- figures ---------------------------------------------------------------------------------------
def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, out: Path) -> None:
    import io

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
    import pandas as pd

    from store.figures import probe_figure
    from store.probes import summary

    acc, names = data["accuracy"], {}
    labels = ["Ave", *(ATTRIBUTE_LABELS[a] for a in ATTRIBUTES)]
    fig, ax = _figure(9, 3.6)
    ax = ax[0][0]
    x = np.arange(len(labels))
    bars = [("Stage, here", acc["stage"]["qa_out"], None, "tab:blue", ""), ("Stage, paper", None, C.PAPER_FIGURE1["stage"], "tab:blue", "//"),
            ("Mix, here", acc["mix"]["qa_out"], None, "tab:orange", ""), ("Mix, paper", None, C.PAPER_FIGURE1["mix"], "tab:orange", "//")]
    for i, (label, ours, paper, color, hatch) in enumerate(bars):
        values = [ours[c]["mean"] for c in COLUMNS] if ours else list(paper)
        err = [ours[c]["std"] for c in COLUMNS] if ours else None
        ax.bar(x + (i - 1.5) * 0.2, values, 0.2, yerr=err, label=label, color=color,
               alpha=1.0 if ours else 0.45, hatch=hatch, edgecolor="white" if ours else color, capsize=2)
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
        ax.bar(xs - 0.2, [acc[m][s]["avg"]["mean"] for m in models], 0.4, yerr=[acc[m][s]["avg"]["std"] for m in models],
               color="tab:gray", label="here", capsize=2)
        ax.bar(xs + 0.2, [C.PAPER_FIGURE5[m][k] for m in models], 0.4, color="tab:gray", alpha=0.4, hatch="//",
               edgecolor="tab:gray", label="paper")
        ax.set_xticks(xs, [NAMES[m].replace(" vote", "").replace("-tuned", "") for m in models], fontsize=8)
        ax.set_title(label)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    _finish(fig, axes[0][0], "Figure 5: exact match, %", folder, "figure5", names)

    (folder / "probes").mkdir(exist_ok=True)
    for fmt in BIO_FORMATS:
        for a in ATTRIBUTES:
            frames = []
            for model in PAPER_MODELS:
                for row in data["probes"][fmt][a][model]:
                    for i, run in enumerate(row["runs"]):
                        frames.append({"run": run, "model": model, "layer": row["layer"],
                                       **{c: row[c]["values"][i] for c in PROBE_COLUMNS}})
            agg = summary(pd.DataFrame(frames))
            file = f"probes/{a}-{fmt}.png"
            probe_figure(agg, folder / file, f'Accuracy for the first token of "{a}", BIO = {FORMAT_NAMES[fmt]}')
            names[f"probe-{a}-{fmt}"] = file

    top = C.top_layers(data["layers"])
    fig, axes = _figure(9, 5, 2, 2)
    xs = np.arange(len(ATTRIBUTES))
    for r, fmt in enumerate(BIO_FORMATS):
        for c, column in enumerate(("delta_rep", "delta_mech")):
            ax = axes[r][c]
            for i, model in enumerate(PAPER_MODELS):
                per_seed = [[np.mean([data["probes"][fmt][a][model][layer][column]["values"][s] for layer in top])
                             for s in range(len(data["runs"]))] for a in ATTRIBUTES]
                ax.bar(xs + (i - 0.5) * 0.4, [np.mean(v) for v in per_seed], 0.4,
                       yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in per_seed], capsize=2,
                       color="tab:blue" if model == "stage" else "tab:orange", label=NAMES[model])
            ax.set_xticks(xs, [ATTRIBUTE_LABELS[a] for a in ATTRIBUTES], fontsize=8)
            ax.set_title(f"{'Δrep' if column == 'delta_rep' else 'Δmech'}, BIO = {FORMAT_NAMES[fmt]}", fontsize=10)
            ax.set_ylim(0, 100)
            ax.grid(axis="y", alpha=0.3)
    _finish(fig, axes[0][0], "Top-layer Δrep and Δmech per attribute (BIO order), mean ± std over seeds", folder,
            "deltas", names)

    traj = data["trajectory"]
    if traj:
        fig, axes = _figure(11, 3.4, 1, 3)
        for k, (key, label) in enumerate((("qa_out", "QA out exact match, %"), ("delta_rep", "Δrep, top layer"),
                                          ("cosine", "cos(hBIO_long, hQA), top layer"))):
            ax = axes[0][k]
            for strategy, color in (("stage", "tab:blue"), ("mix", "tab:orange")):
                pts = traj[strategy]
                xs_ = [p["x"] for p in pts]
                mean = np.array([p[key]["mean"] for p in pts])
                std = np.array([p[key]["std"] for p in pts])
                ax.plot(xs_, mean, marker="o", ms=3, color=color, label=NAMES[strategy])
                ax.fill_between(xs_, mean - std, mean + std, color=color, alpha=0.15, lw=0)
            ax.axvline(0, color="gray", ls=":", lw=1)
            ax.set_xlabel("progress (Stage's BIO phase: -1 → 0)")
            ax.set_title(label, fontsize=10)
            ax.grid(alpha=0.3)
        _finish(fig, axes[0][0], "Over training: accuracy and the representation, mean ± std over seeds "
                "(BIO_long, mean over attributes)", folder, "trajectory", names)
    return names


def write_report(study: Study) -> dict:
    """Collect, judge, draw and write report.json, the PNGs and report.md (each file whole)."""
    data = collect(study)
    names = figures(data, study.folder)
    atomic_write_json(study.folder / "report.json", data)
    atomic_write_bytes(study.folder / "report.md", render(data, names).encode())
    return data
