"""`reproduce --dry-run` answers in seconds: the answer boundary checked on a sample that holds every
template and answer value, the CPU's rate from a GEMM probe whose best measurement is kept per
machine, and the thread count the user asked for."""

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig

import jobs.study.rate as rate
from jobs.run.corpus import bio_entries, prompts
from jobs.run.people import generate_people
from jobs.run.spec import build_spec
from jobs.study.costs import MFU, SWEEP_LAYER_S, batch_tokens, shares, sweep_seconds
from jobs.study.dryrun import boundary_sample
from tests.helpers import run_cli


def test_a_phase_s_tokens_are_counted_as_its_batches_hold_them():
    """Real tokens, tokens computed (packed rows of row_len, or rows padded to their batch's longest
    example) and the widest batch, counted in numpy over every row at once, against counting them
    batch by batch."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        lengths = rng.integers(1, 300, size=200)
        batches = [
            [rng.choice(200, size=rng.integers(1, 5)) for _ in range(rng.integers(1, 6))]
            for _ in range(rng.integers(1, 30))
        ]
        for row_len in (None, 512):
            width = [row_len or max(int(lengths[row].max()) for row in batch) for batch in batches]
            assert batch_tokens(batches, lengths, row_len) == (
                sum(int(lengths[row].sum()) for batch in batches for row in batch),
                sum(len(batch) * w for batch, w in zip(batches, width)),
                max(len(batch) * w for batch, w in zip(batches, width)),
            )


def test_the_boundary_sample_holds_every_template_and_answer_value_and_is_a_sample():
    spec = build_spec("cpu")
    people = generate_people(spec.data, 0)
    everything = prompts(people, bio_entries(people, spec.data, 0))
    sample = boundary_sample(everything, seed=0, size=500)
    assert len(sample) < len(everything) / 3
    assert {(p.attribute, p.answer) for p in sample} == {(p.attribute, p.answer) for p in everything}
    ends = lambda ps, fmt: {(p.attribute, p.text(fmt).split()[-1]) for p in ps}  # noqa: E731
    for fmt in ("bio_long", "bio_short", "qa"):
        assert ends(sample, fmt) >= ends(everything, fmt) - {
            (p.attribute, p.text(fmt).split()[-1]) for p in everything if p.text(fmt).split()[-1][:1].isupper()
        }


def test_the_plan_s_shares_of_the_gemm_rate_follow_the_model_s_size():
    """A hidden size that was measured plans with its own shares; one between two measured sizes with
    shares between theirs (a larger model spends more of a step in matrix products), and one beyond
    them (the paper preset's 3,072) with the nearest measured size's, not an extrapolation."""
    for computes, points in MFU.items():
        (small, low), (big, high) = sorted(points.items())
        assert shares(computes, small) == pytest.approx(low) and shares(computes, big) == pytest.approx(high)
        assert shares(computes, 3072) == pytest.approx(high) and shares(computes, 64) == pytest.approx(low)
        middle = shares(computes, int((small * big) ** 0.5))
        for work in low:
            assert min(low[work], high[work]) <= middle[work] <= max(low[work], high[work])
            assert middle[work] == pytest.approx((low[work] + high[work]) / 2, abs=0.01)
    assert shares("bf16", 576)["train"] > shares("bf16", 128)["train"]
    # a probe sweep costs per layer: a 30-layer store takes 30 times one layer's
    per_layer = dict(sorted(SWEEP_LAYER_S.items()))
    assert sweep_seconds(576, 30) == pytest.approx(30 * per_layer[576])
    assert sweep_seconds(128, 4) == pytest.approx(4 * per_layer[128])


def test_the_gemm_probe_keeps_the_best_rate_a_machine_showed(monkeypatch):
    config = LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    # The products' times are the test's own (1 GFLOP/s, then 50x slower): a real clock on a shared
    # machine may be more than 50x slower at one moment than at another, and the rule is what is tested.
    slow = {"factor": 1.0}
    monkeypatch.setattr(rate, "_seconds", lambda m, k, n, dtype: 2 * m * k * n / 1e9 * slow["factor"])
    first = rate.gemm_rate(config, "fp32", rows=128)
    record = json.loads(rate.cache_file().read_text())["rates"]
    assert len(record) == len({(k, n) for _, k, n in rate.products(config)}) and not first["cached"]
    slow["factor"] = 50.0  # a busy moment: the record stands
    busy = rate.gemm_rate(config, "fp32", rows=128)
    assert busy["cached"] and busy["flops_per_s"] == pytest.approx(first["flops_per_s"], rel=1e-6)
    assert json.loads(rate.cache_file().read_text())["rates"] == record
    rate.cache_file().write_text("{not json")  # a damaged record is measured again and rewritten
    again = rate.gemm_rate(config, "fp32", rows=128)
    assert not again["cached"] and len(json.loads(rate.cache_file().read_text())["rates"]) == len(record)


@pytest.fixture
def threads_kept():
    """--threads sets torch's thread count in this process: put it back for the tests after."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_are_the_users_to_choose(tmp_path, capsys, monkeypatch, threads_kept):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # and unset again after: --threads sets it
    argv = ["--workspace", tmp_path / "ws", "reproduce", "--preset", "tiny", "--seeds", "0", "--dry-run"]
    assert run_cli("--threads", "1", *argv) == 0
    out = capsys.readouterr().out
    assert "(1 threads, the best measured on this machine" in out and torch.get_num_threads() == 1
    assert "the answer boundary of" in out and not (tmp_path / "ws").exists()
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert "OMP_NUM_THREADS='many' is not a whole number" in err and len(err.strip().splitlines()) == 1
    assert run_cli("--threads", "0", *argv) == 2
    assert "argument --threads: 0 is out of range" in capsys.readouterr().err


def test_the_plan_comes_as_json_for_a_script_and_a_sweep_gets_faster_with_threads(tmp_path, capsys):
    """`reproduce --dry-run --json` prints the plan's numbers (benchmarks/gpu/check.py sizes its study with
    them), writing nothing; --json alone is refused in one line. Probe sweeps, measured on 2 threads, are
    planned shorter on more and never longer on fewer."""
    argv = ["--workspace", tmp_path / "ws", "reproduce", "--preset", "tiny", "--seeds", "0", "--snapshots", "0"]
    assert run_cli(*argv, "--dry-run", "--json", "--tflops", "1") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["people"] == 16 and plan["seeds"] == 1
    assert [p["phase"] for p in plan["phases"]] == ["bio", "stage", "mix"]
    assert plan["seconds"] == pytest.approx(sum(plan["seconds_per_run"].values()))
    assert all(p["seconds"] > 0 and p["steps"] > 0 for p in plan["phases"]) and plan["memory"]["total"] > 0
    assert not (tmp_path / "ws").exists()
    assert run_cli(*argv, "--json") == 2
    assert capsys.readouterr().err.strip() == "error: --json prints a dry run's plan: give --dry-run too"
    assert sweep_seconds(128, 4, threads=16) == pytest.approx(sweep_seconds(128, 4) / 8)
    assert sweep_seconds(128, 4, threads=1) == sweep_seconds(128, 4)


def test_the_plan_counts_each_site_and_refuses_sites_that_do_not_fit_the_disk(tmp_path, capsys, monkeypatch):
    """The report's sites store in the plan: its sites (the causal test's added), the bytes of one site
    (float16, Stage and Mix, every format, layer, attribute and person) and its time; a site set that is
    what pushes the study past the free disk is refused in one line, before anything is written, and a
    smaller one is planned."""
    import jobs.study.dryrun as dryrun
    from store.names import REPORT_PATCH_SITE

    ws = tmp_path / "ws"
    argv = ("--workspace", ws, "reproduce", "--preset", "tiny", "--seeds", "0", "--dry-run", "--json")
    assert run_cli(*argv, "--sites", "mlp_out@last,attn_out@subject_last") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["sites"] == ["mlp_out@last", "attn_out@subject_last", REPORT_PATCH_SITE]
    people, layers, hidden = plan["people"], plan["layers"], plan["hidden"]
    assert plan["site_bytes"] == 2 * 3 * layers * 6 * people * hidden * 2  # 2 models, 3 formats, 6 attributes
    assert plan["disk"]["sites"] == 3 * plan["site_bytes"]
    assert plan["seconds_per_run"]["sites"] > 0
    base = plan["disk"]["total"] - plan["disk"]["sites"]
    monkeypatch.setattr(dryrun, "free_disk", lambda where: base + plan["site_bytes"])  # room for one site
    assert run_cli(*argv, "--sites", "mlp_out@last,attn_out@subject_last") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the report's 3 sites take" in err and "name fewer with --sites" in err
    assert not ws.exists()  # nothing written
    assert run_cli(*argv, "--sites", "mlp_out@last,attn_out@subject_last", "--gpu-memory", "80") == 0
    capsys.readouterr()  # a plan for another machine (a GPU's): this one's disk is not asked
    assert run_cli(*argv, "--sites", REPORT_PATCH_SITE) == 0  # one site fits
    assert json.loads(capsys.readouterr().out)["sites"] == [REPORT_PATCH_SITE]
    assert run_cli(*argv, "--sites", "resid_mid@nowhere") == 2
    assert "unknown position 'nowhere'" in capsys.readouterr().err
