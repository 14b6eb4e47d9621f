"""The paper's claims, its numbers, and the rules that turn measured numbers into a verdict.

Each `claimN` takes plain numbers (per-seed lists where seeds matter) and returns a `Claim` whose
verdict is computed here, never written by hand: `reproduces`, `partly` or `does not reproduce`.
The thresholds are constants below, stated in the report beside each verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from jobs.words import ATTRIBUTES

REPRODUCES, PARTLY, FAILS = "reproduces", "partly", "does not reproduce"

# Figure 1: QA out-of-distribution exact match, Ave then the six attributes in BIO order.
PAPER_FIGURE1 = {
    "stage": (35.9, 78.9, 47.8, 21.7, 19.1, 16.4, 31.3),
    "mix": (74.7, 89.0, 89.4, 79.4, 74.5, 64.8, 51.3),
}
# Figure 5: BIO, QA in, QA out. The paper's "Vanilla Llama" is our untrained model (a pretrained
# Llama there, a random one here) and its "QA-tuned" is Stage (QA on top of the BIO checkpoint).
PAPER_FIGURE5 = {
    "majority": (2.8, 2.9, 2.8),
    "untrained": (0.1, 0.0, 0.0),
    "bio": (98.7, 0.2, 0.2),
    "stage": (97.2, 100.0, 35.9),
    "mix": (97.4, 98.4, 74.7),
}
PAPER_BIO_FLOOR, PAPER_QA_IN_FLOOR = 97.2, 98.4  # "BIO >= 97.2%, QA in-dist >= 98.4%"
PAPER_STAGE_DELTA_MECH = 20.0  # Stage's Δmech "≈ 20%" at Llama's layer 24 of 28 (BIO_long)
PAPER_SHORT_DELTA_REP = 10.0  # BIO_short: "a much smaller Δrep (< 10%)"

# Rules.
GAP_SHARE = 0.5  # (1) a wide margin: at least half the paper's Mix - Stage gap, Mix ahead in every seed
FLOOR_SLACK = 2.0  # (2) within 2 points of the paper's floors; PARTLY_FLOOR below that
PARTLY_FLOOR = 90.0
DISTAL = 3  # (3) the last three attributes are the distal ones
DECAYS = 0.5  # (3) Stage decays: it keeps at most half its first attribute's accuracy distally
MUCH_LESS = 1.5  # (3) Mix keeps at least 1.5x Stage's share
ATTRIBUTES_NEEDED = 5  # (4) Stage's Δrep above Mix's for `job` beyond seed noise, and for 5 of 6 attributes
SMALL_MECH = 5.0  # (5) Δmech "near zero": below 5 points
AT_FLOOR = 20.0  # (5) a probe that reads at most 20% of held-out people says little: small Δs there are empty


@dataclass
class Claim:
    id: int
    short: str  # the claim, in a line
    paper: str  # the paper's evidence
    measured: str  # ours, in a line
    verdict: str
    rule: str  # how the verdict was computed
    notes: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _mean(values) -> float:
    return float(np.mean(values))


def _pm(values, ddof: int = 0) -> str:
    """mean ± std over seeds (just the mean for one seed): population std for exact match, as
    `factrecall-jobs show` prints it; sample std (ddof=1) for probes, as `factrecall-jobs probe` does."""
    values = list(values)
    text = f"{np.mean(values):.1f}"
    return text + (f" ± {np.std(values, ddof=ddof):.1f}" if len(values) > 1 else "")


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def claim1(stage_out: list[float], mix_out: list[float]) -> Claim:
    """Mix beats Stage on QA out-of-distribution by a wide margin. Per-seed QA-out averages, paired."""
    paper_gap = PAPER_FIGURE1["mix"][0] - PAPER_FIGURE1["stage"][0]
    gaps = [m - s for s, m in zip(stage_out, mix_out)]
    gap = _mean(gaps)
    every = all(g > 0 for g in gaps)
    if gap >= GAP_SHARE * paper_gap and every:
        verdict = REPRODUCES
    elif gap > 0:
        verdict = PARTLY
    else:
        verdict = FAILS
    notes = [] if every else [f"Mix is not ahead in every seed (gaps {', '.join(f'{g:+.1f}' for g in gaps)})"]
    return Claim(
        1,
        "Mix beats Stage on QA out-of-distribution by a wide margin",
        f"Mix {PAPER_FIGURE1['mix'][0]} vs Stage {PAPER_FIGURE1['stage'][0]}: +{paper_gap:.1f} points",
        f"Mix {_pm(mix_out)} vs Stage {_pm(stage_out)}: {gap:+.1f} points "
        f"({gap / paper_gap:.0%} of the paper's gap), Mix ahead in {sum(g > 0 for g in gaps)} of {len(gaps)} seeds",
        verdict,
        f"reproduces if the mean gap is at least {GAP_SHARE:.0%} of the paper's "
        f"({GAP_SHARE * paper_gap:.1f} points) and Mix is ahead in every seed; partly if the mean gap is positive",
        notes,
        {"gap": gap, "paper_gap": paper_gap, "gaps": gaps},
    )


def claim2(acc: dict[str, dict[str, list[float]]]) -> Claim:
    """Both models store the BIO facts and fit QA in-distribution. acc[model][set] = per-seed averages
    for model in (stage, mix), set in (bio, qa_in)."""
    floors = {"bio": PAPER_BIO_FLOOR, "qa_in": PAPER_QA_IN_FLOOR}
    means = {m: {s: _mean(acc[m][s]) for s in floors} for m in ("stage", "mix")}
    shortfall = min(means[m][s] - floors[s] for m in means for s in floors)
    lowest = min(means[m][s] for m in means for s in floors)
    if shortfall >= -FLOOR_SLACK:
        verdict = REPRODUCES
    elif lowest >= PARTLY_FLOOR:
        verdict = PARTLY
    else:
        verdict = FAILS
    measured = "; ".join(
        f"{m.capitalize()} BIO {_pm(acc[m]['bio'])}, QA in {_pm(acc[m]['qa_in'])}" for m in ("stage", "mix")
    )
    notes = [
        f"{m.capitalize()} {s.replace('_', ' ')} {means[m][s]:.1f} is below the paper's floor of {floors[s]}"
        for m in means
        for s in floors
        if means[m][s] < floors[s]
    ]
    return Claim(
        2,
        "Both Stage and Mix store the BIO facts and fit QA in-distribution",
        f"BIO ≥ {PAPER_BIO_FLOOR}, QA in ≥ {PAPER_QA_IN_FLOOR} for both",
        measured,
        verdict,
        f"reproduces if every mean is within {FLOOR_SLACK:g} points of the paper's floors (or above); "
        f"partly if every one is at least {PARTLY_FLOOR:g}",
        notes,
        {"means": means},
    )


def retention(per_attribute: list[float]) -> float:
    """The distal attributes' mean QA-out accuracy as a share of the first attribute's."""
    first = per_attribute[0]
    return _mean(per_attribute[-DISTAL:]) / first if first > 0 else float("nan")


def _spearman(values: list[float]) -> float:
    """Rank correlation of accuracy with the attribute's position in the BIO (-1: strictly falling)."""
    from scipy.stats import spearmanr  # scipy loads only for the report (claims.py is tested on its own)

    if np.ptp(values) == 0:  # undefined for a flat profile
        return float("nan")
    return float(spearmanr(np.arange(len(values)), values).statistic)


def claim3(stage: list[float], mix: list[float]) -> Claim:
    """Stage's QA-out accuracy decays with the attribute's position in the BIO, Mix's much less.
    `stage`, `mix`: mean QA-out accuracy per attribute, in BIO order."""
    r_stage, r_mix = retention(stage), retention(mix)
    paper = {m: retention(list(PAPER_FIGURE1[m][1:])) for m in ("stage", "mix")}
    if r_stage <= DECAYS and r_mix >= MUCH_LESS * r_stage:
        verdict = REPRODUCES
    elif r_mix > r_stage:
        verdict = PARTLY
    else:
        verdict = FAILS
    distal = ", ".join(ATTRIBUTES[-DISTAL:])
    return Claim(
        3,
        "Stage's recall decays with the attribute's position in the BIO; Mix's much less",
        f"distal ({distal}) accuracy as a share of birth date's: Stage {paper['stage']:.2f}, Mix {paper['mix']:.2f}",
        f"Stage {r_stage:.2f} ({stage[0]:.1f} → {_mean(stage[-DISTAL:]):.1f}), Mix {r_mix:.2f} "
        f"({mix[0]:.1f} → {_mean(mix[-DISTAL:]):.1f}); rank correlation with position: Stage "
        f"{_spearman(stage):+.2f}, Mix {_spearman(mix):+.2f}",
        verdict,
        f"reproduces if Stage keeps at most {DECAYS:.0%} of its first attribute's accuracy on the "
        f"last {DISTAL} attributes and Mix keeps at least {MUCH_LESS:g}x Stage's share; partly if Mix keeps more",
        [],
        {"retention_stage": r_stage, "retention_mix": r_mix, "paper": paper},
    )


def top_layers(layers: int) -> list[int]:
    """The top quarter of the layers (at least one): Llama-3.2-3B's 21-27, the built-in model's 3."""
    return list(range(layers - max(1, layers // 4), layers))


def separated(above: tuple[float, float], below: tuple[float, float]) -> bool:
    """Whether interval `above` lies wholly above interval `below` (the two do not overlap)."""
    return above[0] > below[1]


def _ci(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:.1f}, {interval[1]:.1f}]"


def claim4(
    delta_rep: dict[str, dict[str, list[float]]],
    stage_mech_max: tuple[float, int] | None = None,
    layers: int | None = None,
    job_intervals: dict[str, tuple[float, float]] | None = None,
) -> Claim:
    """With BIO_long, Stage's Δrep exceeds Mix's in the top layers. delta_rep[attribute][model]: per-seed
    Δrep averaged over the top layers. `stage_mech_max`: Stage's largest Δmech (mean over seeds) and its layer.
    `job_intervals[model]`: the 95% bootstrap interval (people, and seeds) of job's top-layer Δrep; where
    given, "exceeds" means the two intervals are separated, else that the gap beats the seeds' spread."""
    diffs = {a: _mean(v["stage"]) - _mean(v["mix"]) for a, v in delta_rep.items()}
    noise = {a: float(np.hypot(_std(v["stage"]), _std(v["mix"]))) for a, v in delta_rep.items()}
    if job_intervals is not None:
        job_holds = separated(job_intervals["stage"], job_intervals["mix"])
    else:
        job_holds = diffs["job"] > max(noise["job"], 0.0)
    ahead = sum(d > 0 for d in diffs.values())
    if job_holds and ahead >= ATTRIBUTES_NEEDED:
        verdict = REPRODUCES
    elif diffs["job"] > 0 or ahead > len(diffs) / 2:
        verdict = PARTLY
    else:
        verdict = FAILS
    job = delta_rep["job"]
    notes = []
    if stage_mech_max is not None:
        value, layer = stage_mech_max
        where = f"layer {layer}" + (f" of {layers}" if layers else "")
        notes.append(
            f"Stage's largest Δmech is {value:.1f} at {where} (paper: ≈ {PAPER_STAGE_DELTA_MECH:g} at layer 24 of 28)"
        )
    behind = [a for a, d in diffs.items() if d <= 0]
    if behind:
        notes.append(f"Stage's Δrep is not above Mix's for {', '.join(behind)}")
    measured = f"job: Stage {_pm(job['stage'], 1)} vs Mix {_pm(job['mix'], 1)}"
    if job_intervals is not None:
        measured += f" (95% intervals {_ci(job_intervals['stage'])} vs {_ci(job_intervals['mix'])})"
        if diffs["job"] > 0 and not job_holds:
            notes.append("Stage's job Δrep is above Mix's on average, but the two intervals overlap: not beyond noise")
        exceeds = "Stage's Δrep interval lies wholly above Mix's for job (95% bootstrap over people and seeds)"
    else:
        exceeds = "Stage's Δrep exceeds Mix's for job by more than the seeds' spread (√(sd²+sd²))"
    return Claim(
        4,
        "With BIO_long, Stage's Δrep exceeds Mix's in the top layers",
        "Figure 3 (job): Stage's Δrep significantly larger than Mix's",
        f"{measured}; Stage above Mix for {ahead} of {len(diffs)} attributes",
        verdict,
        f"reproduces if, averaged over the top layers, {exceeds} and Stage's is above Mix's for at least "
        f"{ATTRIBUTES_NEEDED} of 6 attributes; partly if for job or most attributes",
        notes,
        {"differences": diffs, "noise": noise, "job_intervals": {m: list(v) for m, v in (job_intervals or {}).items()}},
    )


def claim5(
    short: dict[str, dict[str, float]], intervals: dict[str, dict[str, tuple[float, float]]] | None = None
) -> Claim:
    """With BIO_short, both models' Δrep are small and Δmech near zero. short[model] holds, for `job`
    over the top layers and seeds: delta_rep, delta_mech and the four probe accuracies. Where
    `intervals[model]` gives their 95% bootstrap intervals, "small" and "near zero" mean the whole
    interval lies below the threshold, not only its middle."""

    def small(m: str) -> bool:
        rep, mech = (
            (intervals[m]["delta_rep"][1], intervals[m]["delta_mech"][1])
            if intervals is not None
            else (short[m]["delta_rep"], short[m]["delta_mech"])
        )
        return rep < PAPER_SHORT_DELTA_REP and mech < SMALL_MECH

    def floor(m: str) -> bool:
        return max(short[m][k] for k in ("acc_qa_wqa", "acc_bio_wqa", "acc_qa_wbio", "acc_bio_wbio")) <= AT_FLOOR

    meaningful = [m for m in ("stage", "mix") if small(m) and not floor(m)]
    if len(meaningful) == 2:
        verdict = REPRODUCES
    elif meaningful or all(small(m) for m in ("stage", "mix")):
        verdict = PARTLY
    else:
        verdict = FAILS
    notes = []
    for m in ("stage", "mix"):
        if floor(m):
            notes.append(
                f"{m.capitalize()}'s probes are at the floor with BIO_short (every accuracy ≤ {AT_FLOOR:g}%: "
                f"Acc(hBIO·WBIO) {short[m]['acc_bio_wbio']:.1f}, Acc(hQA·WQA) {short[m]['acc_qa_wqa']:.1f}), "
                "so its small Δs say nothing about consistency"
            )
        elif not small(m):
            notes.append(
                f"{m.capitalize()}'s Δrep {short[m]['delta_rep']:.1f} / Δmech {short[m]['delta_mech']:.1f} "
                "are not small" + (" (or their intervals reach past the thresholds)" if intervals is not None else "")
            )

    notes.append(
        "docs/claim5.md measures this claim under data augmentations that name the person before more relations "
        "in training (the full name in every sentence, shuffled sentences, several entries per person)"
    )

    def shown(m: str) -> str:
        text = f"{m.capitalize()} Δrep {short[m]['delta_rep']:.1f}"
        text += f" {_ci(intervals[m]['delta_rep'])}" if intervals is not None else ""
        text += f", Δmech {short[m]['delta_mech']:.1f}"
        return text + (f" {_ci(intervals[m]['delta_mech'])}" if intervals is not None else "")

    condition = (
        f"Δrep's whole 95% interval below {PAPER_SHORT_DELTA_REP:g} and Δmech's below {SMALL_MECH:g}"
        if intervals is not None
        else f"Δrep < {PAPER_SHORT_DELTA_REP:g} and Δmech < {SMALL_MECH:g}"
    )
    return Claim(
        5,
        "With BIO_short, both models' Δrep are small and Δmech near zero",
        f"Figure 4 (job): Δrep < {PAPER_SHORT_DELTA_REP:g}, Δmech ≈ 0 for both",
        "; ".join(shown(m) for m in ("stage", "mix")),
        verdict,
        f"reproduces if, for job over the top layers, both models have {condition}, with some probe "
        f"reading more than {AT_FLOOR:g}% of people; partly if one does, "
        "or both only at the floor",
        notes,
        {"short": short, "intervals": {m: {k: list(v) for k, v in i.items()} for m, i in (intervals or {}).items()}},
    )


# -- the causal twins of claims 4 and 5 (interventions, `factrecall-jobs patch`; not the paper's) -------
SMALL_PATCH = 5.0  # a patch that "changes little": its whole 95% interval of gain within ±5 points


def causal4(gain: dict[str, dict], controls: dict[str, dict]) -> Claim:
    """Claim 4's causal twin: Stage fails QA-out because its QA prompt builds another vector than its
    BIO prompt does, so the same person's hBIO_long put into Stage's QA pass (top layers, last prompt
    token) restores recall, by more than it changes Mix's. gain[model]: {"mean", "ci"} of
    hBIO_long→QA minus unpatched QA (points); controls[model]: identity and random exact match beside QA."""
    stage, mix = gain["stage"], gain["mix"]
    if stage["ci"][0] > 0 and separated(stage["ci"], mix["ci"]):
        verdict = REPRODUCES
    elif stage["ci"][0] > 0:
        verdict = PARTLY
    else:
        verdict = FAILS
    notes = _control_notes(controls)
    if stage["ci"][0] > 0 and not separated(stage["ci"], mix["ci"]):
        notes.append(
            f"Mix gains as much or more ({mix['mean']:+.1f}): its QA pass also reads less than its BIO "
            "vector holds, so the gap is not Stage's alone"
        )
    return Claim(
        4,
        "Patching Stage's own hBIO_long into its QA pass restores QA-out recall, more than Mix's changes",
        "(not in the paper: the causal test of the representation-consistency account behind claim 4)",
        f"gain over unpatched QA: Stage {stage['mean']:+.1f} {_ci(stage['ci'])}, Mix {mix['mean']:+.1f} "
        f"{_ci(mix['ci'])}",
        verdict,
        "reproduces if Stage's gain interval (95% bootstrap over people and seeds, top layers) lies above 0 and "
        "wholly above Mix's; partly if only above 0",
        notes,
        {"gain": gain, "controls": controls},
    )


def causal5(gain: dict[str, dict], controls: dict[str, dict]) -> Claim:
    """Claim 5's causal twin: with BIO_short, hBIO_short and hQA are alike for both models, so the
    same person's hBIO_short put into the QA pass changes little. gain[model]: {"mean", "ci"} of
    hBIO_short→QA minus unpatched QA."""

    def little(m: str) -> bool:
        return -SMALL_PATCH < gain[m]["ci"][0] and gain[m]["ci"][1] < SMALL_PATCH

    held = [m for m in ("stage", "mix") if little(m)]
    verdict = REPRODUCES if len(held) == 2 else PARTLY if held else FAILS
    notes = _control_notes(controls)
    for m in ("stage", "mix"):
        lo, hi = gain[m]["ci"]
        if lo >= SMALL_PATCH or hi <= -SMALL_PATCH:
            notes.append(
                f"{m.capitalize()}'s recall moves by {gain[m]['mean']:+.1f} {_ci(gain[m]['ci'])} when its "
                "hBIO_short replaces hQA: the two vectors are not interchangeable for it"
            )
        elif not little(m):
            notes.append(
                f"{m.capitalize()}'s change {gain[m]['mean']:+.1f} {_ci(gain[m]['ci'])} is too uncertain to call "
                "small or not (more people or seeds narrow the interval)"
            )
    return Claim(
        5,
        "Patching hBIO_short into the QA pass changes little, for both models",
        "(not in the paper: the causal test behind claim 5)",
        "; ".join(f"{m.capitalize()} {gain[m]['mean']:+.1f} {_ci(gain[m]['ci'])}" for m in ("stage", "mix")),
        verdict,
        f"reproduces if, for both models, the gain's whole 95% interval lies within ±{SMALL_PATCH:g} "
        "points; partly if for one",
        notes,
        {"gain": gain, "controls": controls},
    )


def _control_notes(controls: dict[str, dict]) -> list[str]:
    """What the controls say about the experiment itself: the identity patch must change nothing, a
    random vector must take recall away."""
    notes = []
    for m, c in controls.items():
        if abs(c["identity_qa"] - c["qa"]) > 0.5:
            notes.append(
                f"{m.capitalize()}'s identity patch moved QA recall from {c['qa']:.1f} to {c['identity_qa']:.1f}: "
                "the patch itself perturbs; read the gains with that in mind"
            )
        if c["random_qa"] >= c["qa"] - 0.5 and c["qa"] > 5:
            notes.append(
                f"{m.capitalize()} answers as well with a random vector ({c['random_qa']:.1f}): the layer's "
                "last-token vector is not what it recalls from"
            )
    return notes
