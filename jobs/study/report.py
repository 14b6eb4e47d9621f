"""The reproduce report: every number of the study gathered from its run folders (`collect`, written as
report.json), the paper's claims judged on them (`claims.py`), and report.md (`markdown.py`) with PNG
figures (`figures.py`) beside it, in the study folder WORKSPACE/reproduce/NAME/.

Numbers come from three places, each named in the report: a run's metrics.json (exact match), its
activation store's cached probe sweeps (RUN/activations.zarr, group probes/), and its trajectory
store's (RUN/trajectory.zarr). Nothing here trains or fits: `reproduce.fit_probes` has filled
the caches, and a sweep missing from them is fitted on the spot.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import store
from jobs.errors import FactrecallError
from jobs.run.files import atomic_write_bytes, atomic_write_json, read_json
from jobs.run.folder import read_done, read_metrics
from jobs.study import claims
from jobs.study.figures import figures
from jobs.study.markdown import render
from jobs.study.plan import (
    ACCURACY_COLUMNS,
    PAPER_MODELS,
    PATCH_ATTRIBUTE,
    REPORT_MODELS,
    TRAJECTORY_FORMAT,
    Study,
    check_complete,
)
from jobs.study.where import collect_where
from jobs.words import ATTRIBUTES, BIO_FORMATS, SET_LABELS
from store.names import PROBE_COLUMNS, PROBE_CONTROLS, PROBE_INTERVALS, PROBE_SELECTIVITY, TRAJECTORY_NAME
from store.probe_tables import frame, intervals
from store.probes import ProbeSettings, sweep, sweeps

TRAJECTORY_COLUMNS = ("delta_rep", "delta_mech", "cosine", "cka", "acc_qa_wqa", "acc_bio_wqa")
PROBED = [*PAPER_MODELS, "untrained"]  # the untrained model: every probe table's baseline
REPORTED = (*PROBE_COLUMNS, *PROBE_CONTROLS, *PROBE_SELECTIVITY)  # per layer, per seed and mean ± std


def _stats(values: list[float], ddof: int = 0) -> dict:
    values = [float(v) for v in values]
    return {
        "values": values,
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=ddof)) if len(values) > ddof else 0.0,
    }


# -- collect -------------------------------------------------------------------------------------
def collect(study: Study) -> dict:
    """Every number the report shows, per seed and as mean and std, with where it came from."""
    check_complete(study)
    workspace = study.folder.parent.parent
    runs = [
        {
            "name": p.name,
            "path": str(p.relative_to(workspace)) if p.is_relative_to(workspace) else str(p),
            "seed": spec.seed,
        }
        for spec, p in study.runs
    ]
    metrics = [read_metrics(p) for p in study.paths]
    spec = study.runs[0][0]
    mains = [store.open(p) for p in study.paths]
    data: dict = {
        "study": study.name,
        "preset": spec.preset,
        "workspace": str(workspace),
        "runs": runs,
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "setup": _setup(study, metrics, mains),
    }

    data["accuracy"] = {
        model: {s: {c: _stats([m[model][s][c] for m in metrics]) for c in ACCURACY_COLUMNS} for s in SET_LABELS}
        for model in REPORT_MODELS
        if all(model in m for m in metrics)
    }

    layers = mains[0].layers
    data["layers"] = layers
    probes: dict = {}
    top_intervals: dict = {}
    top = claims.top_layers(layers)
    for fmt in BIO_FORMATS:
        for attribute in ATTRIBUTES:
            found = list(sweeps(mains, PROBED, ProbeSettings(attribute=attribute, bio=fmt)))
            df = frame(found)
            probes.setdefault(fmt, {})[attribute] = {
                model: [
                    {
                        "layer": int(layer),
                        **{c: _stats(rows[c].tolist(), ddof=1) for c in REPORTED},
                        **{f"{c}_ci": list(bounds[c]) for c in PROBE_INTERVALS},
                        "runs": rows["run"].tolist(),
                        "n_classes": int(rows["n_classes"].iloc[0]),
                        "n_train": int(rows["n_train"].iloc[0]),
                        "n_test": int(rows["n_test"].iloc[0]),
                    }
                    for layer, rows in df[df["model"] == model].groupby("layer", sort=True)
                    for bounds in [intervals(found, model, [int(layer)])]
                ]
                for model in PROBED
            }
            # The top layers together, as the claims read them: 95% bootstrap intervals over people and seeds.
            top_intervals.setdefault(fmt, {})[attribute] = {
                model: {c: list(v) for c, v in intervals(found, model, top).items()} for model in PROBED
            }
    data["probes"] = probes
    data["probe_intervals"] = top_intervals
    data["interventions"] = _interventions(study, mains, top)
    data["trajectory"] = _trajectory(study, metrics, mains, layers)
    data["where"] = collect_where(study.paths, study.sites)
    data["timing"] = _timing(study)
    data["claims"] = [c.to_json() for c in judge(data)]
    data["causal"] = [c.to_json() for c in judge_causal(data)]
    return data


def _interventions(study: Study, mains: list, top: list[int]) -> dict:
    """The patching results of `PATCH_ATTRIBUTE` (cached by `reproduce`; computed here if missing):
    per model and layer each column's mean ± std over seeds, and over the top layers each column's
    and each difference's 95% bootstrap interval over people and seeds."""
    from jobs.run.patch import patch
    from store.interventions import COLUMNS, DIFFERENCES, PatchSettings
    from store.interventions import intervals as patch_intervals

    settings = PatchSettings(attribute=PATCH_ATTRIBUTE)
    found = [
        result for path, s in zip(study.paths, mains) for result, _ in patch(path, s, list(PAPER_MODELS), settings)
    ]
    out: dict = {
        "attribute": PATCH_ATTRIBUTE,
        "split": settings.split,
        "n_people": len(found[0]["people"]),
        "erase_rank": max(r["rows"][-1].get("erase_rank", 0) for r in found),
        "layers": {},
        "top": {},
    }
    for model in PAPER_MODELS:
        mine = [r for r in found if r["model"] == model]
        out["layers"][model] = [
            {"layer": row["layer"], **{c: _stats([r["rows"][i][c] for r in mine]) for c in COLUMNS}}
            for i, row in enumerate(mine[0]["rows"])
        ]
        cis = patch_intervals(found, model, top)
        means = {
            c: float(np.mean([r["rows"][i][c] for r in mine for i, row in enumerate(r["rows"]) if row["layer"] in top]))
            for c in COLUMNS
        }
        for name, (a, b) in DIFFERENCES.items():
            means[name] = means[a] - means[b]
        out["top"][model] = {c: {"mean": means[c], "ci": list(cis[c])} for c in means}
    return out


def _setup(study: Study, metrics: list[dict], mains: list) -> dict:
    """The shape comes from the store: what the run's model really had, checkpoint or built-in."""
    spec = study.runs[0][0]
    trained = metrics[0]["train"]
    reused = sorted(
        {
            f"{p.name}: {phase} from {m['train'][phase]['reused_from']}"
            for p, m in zip(study.paths, metrics)
            for phase in m["train"]
            if "reused_from" in m["train"][phase]
        }
    )
    people = spec.data.people
    qa_in = round(people * spec.data.qa_in_fraction)
    return {
        "people": people,
        "qa_in": qa_in,
        "qa_out": people - qa_in,
        "model": spec.model.path or "built-in Llama",
        "layers": mains[0].layers,
        "hidden": mains[0].hidden,
        "parameters": read_done(study.paths[0], "init").get("parameters"),
        "phases": {
            ph: {
                "steps": trained[ph]["steps"],
                "settings": getattr(spec.train, "qa" if ph == "stage" else ph).model_dump(),
            }
            for ph in ("bio", "stage", "mix")
        },
        "snapshots": spec.train.snapshots,
        "reused": reused,
        "data": spec.data.model_dump(mode="json"),
    }


TIMING_FILE = "timing.json"


def read_timing(folder: Path) -> dict[str, float]:
    """The study's timing.json: seconds per part ({} when there is none; a damaged one is {} too, and
    rewritten by the next part timed: it is a record of time spent, never a reason to stop)."""
    try:
        parts = read_json(folder / TIMING_FILE, "", default={})
    except FactrecallError:
        return {}
    return (
        {k: float(v) for k, v in parts.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if isinstance(parts, dict)
        else {}
    )


def _timing(study: Study) -> dict:
    parts = read_timing(study.folder)
    return {"parts": parts, "total_s": round(sum(parts.values()), 1)}


def _top(rows: list[dict], layers: list[int], column: str) -> float:
    return float(np.mean([rows[layer][column] for layer in layers]))


def _trajectory(study: Study, metrics: list[dict], mains: list, layers: int) -> dict:
    """Per strategy (Stage, Mix), the checkpoints along training in order, each with its exact match
    and the top-layer probe numbers (BIO_long, averaged over the attributes), mean over seeds.
    `x` is progress through the phase that trains on QA (Stage: its QA phase; Mix: its only phase),
    0 at its start and 1 at its end; Stage's BIO phase runs from -1 to 0."""
    if not study.runs[0][0].train.snapshots:
        return {}
    top = claims.top_layers(layers)
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
                point = {
                    "model": name,
                    "phase": phase,
                    "step": step,
                    "x": x,
                    **{k: acc[k]["avg"] for k in SET_LABELS},
                    **{c: float(np.mean([_top(rows[a], top, c) for a in ATTRIBUTES])) for c in TRAJECTORY_COLUMNS},
                    "job_delta_rep": _top(rows["job"], top, "delta_rep"),
                }
                seq.append(point)
            per_seed[strategy].append(seq)
    out = {}
    for strategy, seqs in per_seed.items():
        n = min(len(s) for s in seqs)  # the same count in every seed (snapshots per phase are fixed)
        out[strategy] = [
            {
                "models": [seq[i]["model"] for seq in seqs],
                "phase": seqs[0][i]["phase"],
                "x": float(np.mean([seq[i]["x"] for seq in seqs])),
                "step": round(float(np.mean([seq[i]["step"] for seq in seqs]))),
                **{
                    k: _stats([seq[i][k] for seq in seqs], ddof=1)
                    for k in (*SET_LABELS, *TRAJECTORY_COLUMNS, "job_delta_rep")
                },
            }
            for i in range(n)
        ]
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
        gaps = {
            k: [m[k]["mean"] - s[k]["mean"] for m, s in zip(qa_part["mix"], qa_part["stage"])]
            for k in ("qa_out", "cosine", "delta_rep")
        }
        out["gap_values"] = gaps
        out["gap"] = {k: first_reach(xs, v, v[-1] / 2) if v[-1] else None for k, v in gaps.items()}
        out["gap_x"] = xs
    return out


# -- claims ----------------------------------------------------------------------------------------
def judge(data: dict) -> list[claims.Claim]:
    acc = data["accuracy"]
    top = claims.top_layers(data["layers"])

    def per_seed_top(fmt: str, attribute: str, model: str, column: str) -> list[float]:
        rows = data["probes"][fmt][attribute][model]
        return [
            float(np.mean([rows[layer][column]["values"][i] for layer in top]))
            for i in range(len(rows[0][column]["values"]))
        ]

    long_rep = {a: {m: per_seed_top("bio_long", a, m, "delta_rep") for m in PAPER_MODELS} for a in ATTRIBUTES}
    stage_mech = [(row["delta_mech"]["mean"], row["layer"]) for row in data["probes"]["bio_long"]["job"]["stage"]]
    short = {
        m: {c: float(np.mean(per_seed_top("bio_short", "job", m, c))) for c in PROBE_COLUMNS[:6]} for m in PAPER_MODELS
    }
    cis = data.get("probe_intervals")  # absent in a report.json written before intervals
    return [
        claims.claim1(acc["stage"]["qa_out"]["avg"]["values"], acc["mix"]["qa_out"]["avg"]["values"]),
        claims.claim2({m: {s: acc[m][s]["avg"]["values"] for s in ("bio", "qa_in")} for m in PAPER_MODELS}),
        claims.claim3(
            [acc["stage"]["qa_out"][a]["mean"] for a in ATTRIBUTES],
            [acc["mix"]["qa_out"][a]["mean"] for a in ATTRIBUTES],
        ),
        claims.claim4(
            long_rep,
            max(stage_mech),
            data["layers"],
            {m: tuple(cis["bio_long"]["job"][m]["delta_rep"]) for m in PAPER_MODELS} if cis else None,
        ),
        claims.claim5(
            short,
            {m: {c: tuple(v) for c, v in cis["bio_short"]["job"][m].items()} for m in PAPER_MODELS} if cis else None,
        ),
    ]


def judge_causal(data: dict) -> list[claims.Claim]:
    """The causal twins of claims 4 and 5, from the interventions' top layers."""
    top = data.get("interventions", {}).get("top")
    if not top:
        return []
    controls = {m: {c: top[m][c]["mean"] for c in ("qa", "identity_qa", "random_qa")} for m in PAPER_MODELS}
    return [
        claims.causal4({m: top[m]["gain_bio_long_qa"] for m in PAPER_MODELS}, controls),
        claims.causal5({m: top[m]["gain_bio_short_qa"] for m in PAPER_MODELS}, controls),
    ]


def write_report(study: Study) -> dict:
    """Collect, judge, draw and write report.json, the PNGs and report.md (each file whole)."""
    data = collect(study)
    names = figures(data, study.folder)
    atomic_write_json(study.folder / "report.json", data)
    atomic_write_bytes(study.folder / "report.md", render(data, names).encode())
    return data
