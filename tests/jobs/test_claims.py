"""The report's verdicts are computed from numbers: checked here on fixed ones. The paper's own numbers
must pass its claims, and numbers that contradict a claim must fail it."""

import math

import pytest

from jobs.run.checkpoints import snapshot_steps
from jobs.study import claims as C
from jobs.study.report import first_reach, onset


def test_the_papers_own_numbers_reproduce_its_accuracy_claims():
    one = C.claim1([35.9], [74.7])
    assert one.verdict == C.REPRODUCES and one.numbers["gap"] == pytest.approx(38.8)
    two = C.claim2({"stage": {"bio": [97.2], "qa_in": [100.0]}, "mix": {"bio": [97.4], "qa_in": [98.4]}})
    assert two.verdict == C.REPRODUCES and two.notes == []
    three = C.claim3(list(C.PAPER_FIGURE1["stage"][1:]), list(C.PAPER_FIGURE1["mix"][1:]))
    assert three.verdict == C.REPRODUCES
    assert three.numbers["retention_stage"] == pytest.approx((19.1 + 16.4 + 31.3) / 3 / 78.9)


def test_claim1_needs_a_wide_gap_in_every_seed():
    assert C.claim1([30, 30, 30], [45, 45, 45]).verdict == C.PARTLY  # +15 < half of 38.8
    mixed = C.claim1([30, 30, 60], [70, 70, 50])  # +33 on average, one seed behind
    assert mixed.verdict == C.PARTLY and "not ahead in every seed" in mixed.notes[0]
    assert C.claim1([50, 50], [40, 45]).verdict == C.FAILS
    assert "Mix 42.5 ± 2.5 vs Stage 50.0 ± 0.0" in C.claim1([50, 50], [40, 45]).measured  # population std, as `show`


def test_claim2_floors():
    acc = {
        "stage": {"bio": [96.0, 95.0], "qa_in": [99.0, 99.0]},
        "mix": {"bio": [100.0, 100.0], "qa_in": [100.0, 100.0]},
    }
    assert C.claim2(acc).verdict == C.REPRODUCES  # 95.5 is within 2 points of 97.2
    acc["stage"]["bio"] = [92.0, 93.0]
    partly = C.claim2(acc)
    assert partly.verdict == C.PARTLY and partly.notes == ["Stage bio 92.5 is below the paper's floor of 97.2"]
    acc["mix"]["qa_in"] = [80.0, 85.0]
    assert C.claim2(acc).verdict == C.FAILS


def test_claim3_decay():
    flat = [50.0] * 6
    assert C.claim3(flat, flat).verdict == C.FAILS
    assert C.claim3([80, 40, 20, 10, 10, 10], [90, 80, 70, 60, 40, 25]).verdict == C.REPRODUCES
    assert C.claim3([80, 60, 50, 50, 50, 40], [90, 80, 70, 60, 60, 55]).verdict == C.PARTLY  # Stage keeps 58%
    assert math.isnan(C.retention([0, 10, 10, 10, 10, 10]))


def _reps(stage_job, mix_job, others=(60.0, 40.0)):
    out = {a: {"stage": [others[0]] * 3, "mix": [others[1]] * 3} for a in C.ATTRIBUTES}
    out["job"] = {"stage": stage_job, "mix": mix_job}
    return out


def test_claim4_is_judged_against_seed_noise():
    assert C.claim4(_reps([80, 82, 84], [55, 57, 59]), (20.2, 0), 4).verdict == C.REPRODUCES
    noisy = C.claim4(_reps([60, 90, 75], [60, 70, 80]))  # +5 on average, seeds spread by 15 and 10
    assert noisy.verdict == C.PARTLY
    behind = C.claim4(_reps([50, 50, 50], [60, 60, 60], others=(40.0, 60.0)))
    assert behind.verdict == C.FAILS and "not above Mix's for birth_date" in behind.notes[0]
    assert "Stage's largest Δmech is 20.2 at layer 0 of 4" in C.claim4(_reps([80] * 3, [50] * 3), (20.2, 0), 4).notes[0]


def _short(rep, mech, accs):
    return dict(zip(("acc_qa_wqa", "acc_bio_wqa", "acc_qa_wbio", "acc_bio_wbio"), accs), delta_rep=rep, delta_mech=mech)


def test_claim5_small_deltas_count_only_above_the_floor():
    high = (90.0, 85.0, 89.0, 95.0)
    assert C.claim5({"stage": _short(5, 1, high), "mix": _short(3, 0.5, high)}).verdict == C.REPRODUCES
    floor = (8.0, 5.0, 7.0, 6.8)
    at_floor = C.claim5({"stage": _short(4.5, 4.8, floor), "mix": _short(21.7, 14.2, (42, 20, 28, 20))})
    assert at_floor.verdict == C.FAILS
    assert "Stage's probes are at the floor" in at_floor.notes[0] and "Mix's Δrep 21.7" in at_floor.notes[1]
    assert C.claim5({"stage": _short(4.5, 4.8, floor), "mix": _short(3, 1, floor)}).verdict == C.PARTLY
    assert C.claim5({"stage": _short(4, 1, high), "mix": _short(30, 1, high)}).verdict == C.PARTLY


def test_claim5_points_to_the_augmentation_study_and_a_report_names_augmented_data():
    import json
    from collections import defaultdict
    from pathlib import Path

    from jobs.run.spec import build_spec
    from jobs.study.markdown import render

    root = Path(__file__).resolve().parents[2]
    high = (90.0, 85.0, 89.0, 95.0)
    note = C.claim5({"stage": _short(5, 1, high), "mix": _short(3, 0.5, high)}).notes[-1]
    assert note.startswith("docs/claim5.md ") and (root / "docs" / "claim5.md").is_file()
    # report.md says when its study's data is not the paper's, in words, and is silent when it is.
    data = json.loads((root / "docs" / "reproduce" / "cpu-bf16" / "report.json").read_text())
    figures = defaultdict(lambda: "figure.png")
    for overrides, said in (
        ([], None),
        (
            ["data.full_name=true", "data.bio_entries=4", "data.bio_templates=multi"],
            "4 BIO entries per person; each sentence's template drawn among paraphrases; "
            "the full name in every sentence",
        ),
    ):
        data["setup"]["data"] = build_spec("cpu", overrides=overrides).data.model_dump(mode="json")
        lines = [line for line in render(data, figures).splitlines() if line.startswith("**Data augmented")]
        assert lines == (
            []
            if said is None
            else [
                f"**Data augmented beyond the paper's:** {said} (the paper: one "
                "entry per person, the name only in its first sentence, fixed templates and order). "
                "docs/claim5.md compares such studies with the default."
            ]
        )


def test_claim4_and_claim5_with_intervals_need_them_separated_or_wholly_below():
    """Given bootstrap intervals, "exceeds" means Stage's interval lies wholly above Mix's, and
    "small"/"near zero" that the whole interval lies below the threshold: a mean alone does not do."""
    reps = _reps([80, 82, 84], [55, 57, 59])  # beyond the seeds' spread: reproduces on means
    assert C.claim4(reps, job_intervals={"stage": (70.0, 90.0), "mix": (50.0, 65.0)}).verdict == C.REPRODUCES
    overlapping = C.claim4(reps, job_intervals={"stage": (60.0, 95.0), "mix": (45.0, 70.0)})
    assert overlapping.verdict == C.PARTLY and "intervals overlap" in " ".join(overlapping.notes)
    assert "[60.0, 95.0] vs [45.0, 70.0]" in overlapping.measured and "wholly above" in overlapping.rule
    high = (90.0, 85.0, 89.0, 95.0)
    short = {"stage": _short(5, 1, high), "mix": _short(3, 0.5, high)}
    tight = {
        m: {"delta_rep": (v["delta_rep"] - 2, v["delta_rep"] + 2), "delta_mech": (0.0, 3.0)} for m, v in short.items()
    }
    assert C.claim5(short, tight).verdict == C.REPRODUCES
    wide = {**tight, "mix": {"delta_rep": (0.0, 12.0), "delta_mech": (0.0, 3.0)}}  # Mix's Δrep may be 12
    judged = C.claim5(short, wide)
    assert judged.verdict == C.PARTLY and "Mix's Δrep 3.0" in judged.notes[0] and "[0.0, 12.0]" in judged.measured


def test_top_layers_are_the_top_quarter():
    assert C.top_layers(4) == [3]
    assert C.top_layers(28) == list(range(21, 28))
    assert C.top_layers(2) == [1]


def test_onset_is_where_half_the_change_is_made():
    assert onset([0, 0.5, 1], [0, 10, 20]) == pytest.approx(0.5)
    assert onset([0, 0.25, 0.5, 1], [0, 40, 50, 50]) == pytest.approx(0.15625)  # 25 of 50, between 0 and 0.25
    assert onset([0, 0.5, 1], [1.0, 0.2, 0.0]) == pytest.approx(0.3125)  # falling
    assert onset([0, 1], [3, 3]) is None


def test_a_gap_reaches_half_its_final_size():
    xs = [0, 0.25, 0.5, 0.75, 1]
    assert first_reach(xs, [0.0, -19.1, 27.2, 31.0, 31.4], 15.7) == pytest.approx(0.25 + 0.25 * 34.8 / 46.3)
    assert first_reach(xs, [0.25, 0.27, 0.32, 0.34, 0.34], 0.17) == 0  # open from the start
    assert first_reach(xs, [0, -5, -40, -20, -18], -9) == pytest.approx(0.25 + 0.25 * 4 / 35)
    assert first_reach(xs, [0, 1, 2, 3, 4], 10) is None


def test_snapshot_steps_are_evenly_spaced_inside_the_phase():
    assert snapshot_steps(1000, 4) == [250, 500, 750]
    assert snapshot_steps(326, 4) == [82, 163, 244]
    assert snapshot_steps(3, 8) == [1, 2]  # a phase shorter than its snapshots keeps what it can
    assert snapshot_steps(100, 0) == [] and snapshot_steps(100, 1) == []


def test_the_causal_twins_judge_gains_by_their_intervals():
    controls = {m: {"qa": 30.0, "identity_qa": 30.0, "random_qa": 0.0} for m in ("stage", "mix")}
    g = lambda mean, lo, hi: {"mean": mean, "ci": (lo, hi)}  # noqa: E731
    assert C.causal4({"stage": g(60, 50, 70), "mix": g(10, 2, 20)}, controls).verdict == C.REPRODUCES
    both = C.causal4({"stage": g(60, 50, 70), "mix": g(45, 35, 55)}, controls)
    assert both.verdict == C.PARTLY and "Mix gains as much or more" in both.notes[0]
    assert C.causal4({"stage": g(5, -3, 12), "mix": g(0, -5, 5)}, controls).verdict == C.FAILS
    assert C.causal5({"stage": g(1, -3, 4), "mix": g(-1, -4, 2)}, controls).verdict == C.REPRODUCES
    moved = C.causal5({"stage": g(1, -3, 4), "mix": g(-30, -40, -20)}, controls)
    assert moved.verdict == C.PARTLY and "not interchangeable" in moved.notes[0]
    unsure = C.causal5({"stage": g(1, -20, 25), "mix": g(-30, -40, -20)}, controls)
    assert unsure.verdict == C.FAILS and "too uncertain" in unsure.notes[0]
    perturbed = {**controls, "stage": {"qa": 30.0, "identity_qa": 22.0, "random_qa": 30.0}}
    notes = C.causal4({"stage": g(60, 50, 70), "mix": g(10, 2, 20)}, perturbed).notes
    assert "identity patch moved QA recall from 30.0 to 22.0" in notes[0] and "random vector" in notes[1]
