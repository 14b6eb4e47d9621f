"""The spine end to end, as a researcher runs it: `factrecall-jobs run` on the tiny preset."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from safetensors.torch import load_file

from jobs.run.evaluate import eval_sets, evaluate, greedy_match, score
from jobs.run.events import read_events
from jobs.run.files import read_jsonl
from jobs.run.folder import RunFolder, load_spec
from jobs.run.model import load_model
from jobs.run.pipeline import execute, load_prompts
from jobs.run.spec import build_spec
from jobs.run.tables import strategy_curve
from jobs.run.tokenizer import Target, load_tokenizer
from jobs.words import ATTRIBUTES, steps_of
from tests.helpers import metrics, run_cli, wait_until


def test_tiny_run_learns_its_bio_facts_and_writes_a_complete_run_folder(tiny_run):
    m = metrics(tiny_run)
    # A model trained on a handful of people recalls their BIO facts; untrained recalls nothing.
    assert m["bio"]["bio"]["avg"] >= 95
    assert m["mix"]["bio"]["avg"] >= 95 and m["mix"]["qa_in"]["avg"] >= 95
    assert m["stage"]["qa_in"]["avg"] >= 60
    assert m["untrained"]["bio"]["avg"] == 0
    # BIO-only training teaches no QA at all: the question format was never seen.
    assert m["bio"]["qa_in"]["avg"] <= 10
    for model in ("majority", "untrained", "bio", "stage", "mix"):
        assert set(m[model]) >= {"bio", "qa_in", "qa_out"}
        assert set(m[model]["qa_out"]) == {"avg", *ATTRIBUTES}
    assert m["train"]["mix"]["tokens_per_s"] > 0 and m["train"]["mix"]["steps"] > 0
    spec = json.loads((tiny_run / "spec.json").read_text())
    assert spec["strategies"] == ["stage", "mix"] and spec["preset"] == "tiny"
    assert len(read_jsonl(tiny_run / "data" / "people.jsonl")) == spec["data"]["people"]
    for phase in ("init", "bio/final", "stage/final", "mix/final"):
        assert (tiny_run / "checkpoints" / phase / "model.safetensors").exists()
    assert not (tiny_run / "checkpoints" / "mix" / "last").exists()  # optimizer state dropped when done
    env = json.loads((tiny_run / "env.json").read_text())
    assert env[0]["faker"] and env[0]["torch"] and env[0]["device"] == "cpu"
    events = read_jsonl(tiny_run / "events.jsonl")
    assert events[-1] == {**events[-1], "kind": "run", "status": "done"}
    assert {e["step"] for e in events if e["kind"] == "step"} >= {"data", "tokenizer", "train-mix", "eval-mix"}


def steps_taken(run: Path, first_session: bool = False) -> tuple[list[str], list[str]]:
    """(the steps a run started, the steps it marked done), in the order its events say, snapshot
    evaluations (`eval-stage@120`) left out; with `first_session`, only up to the first time the
    run said it was done (a shared run that a later test dumps again adds steps after that)."""
    events = read_events(run)
    if first_session:
        end = next(i for i, e in enumerate(events) if e["kind"] == "run" and e.get("status") == "done")
        events = events[: end + 1]
    events = [e for e in events if "@" not in e.get("step", "@")]
    return (
        [e["step"] for e in events if e["kind"] == "start"],
        [e["step"] for e in events if e["kind"] == "step" and e.get("status") == "done"],
    )


def test_a_run_takes_its_steps_in_the_order_the_vocabulary_names_them(tiny_run):
    """`jobs.words.steps_of` (what `status` and the app count) is the order the pipeline really runs,
    and every step announces its start before it is done."""
    spec = load_spec(tiny_run)
    started, done = steps_taken(tiny_run, first_session=True)
    assert done == steps_of(
        spec.strategies, builtin_model=spec.model.path is None, snapshots=bool(spec.train.snapshots)
    )
    assert started == done


def test_a_run_logs_accuracy_over_training_and_plots_it(tiny_run):
    m = metrics(tiny_run)
    bio_steps = m["train"]["bio"]["steps"]
    steps, acc, switch = strategy_curve(m, "stage")
    assert steps[0] == 0 and switch == bio_steps and steps[-1] == bio_steps + m["train"]["stage"]["steps"]
    assert len(m["train"]["stage"]["curve"]) >= 5  # a short QA phase is still sampled often enough to show a shape
    # The tiny sets are smaller than train.curve_questions, so the last sample is the final score.
    for model, strategy in (("stage", "stage"), ("mix", "mix")):
        assert acc_at_end(m, strategy) == {s: m[model][s]["avg"] for s in ("bio", "qa_in", "qa_out")}
    assert acc["qa_in"][steps <= bio_steps].max() <= 10 < acc["qa_in"][-1]  # Stage learns QA in its QA phase
    image = plt.imread(tiny_run / "curves.png")
    assert image.shape[0] > 300 and image.shape[1] > 1000


def bio(run):
    return run / "checkpoints" / "bio" / "final" / "model.safetensors"


def scores(run, model: str) -> dict:
    return {k: v for k, v in metrics(run)[model].items() if k != "questions_per_s"}


def acc_at_end(m: dict, strategy: str) -> dict:
    _, acc, _ = strategy_curve(m, strategy)
    return {s: float(v[-1]) for s, v in acc.items()}


def test_the_stage_model_starts_from_the_bio_checkpoint(tiny_run):
    m = metrics(tiny_run)
    # One BIO phase serves both the BIO-tuned row and Stage's start: trained once.
    assert m["train"]["bio"]["steps"] > 0 and "stage" in m["train"]
    events = read_jsonl(tiny_run / "events.jsonl")
    assert sum(1 for e in events if e["kind"] == "start" and e["step"] == "train-bio") == 1


def test_batched_decoding_matches_one_question_at_a_time(tiny_run):
    tok = load_tokenizer(tiny_run / "tokenizer")
    model = load_model(tiny_run / "checkpoints" / "stage" / "final", torch.device("cpu"))
    targets = [Target(r["first_token_id"], tuple(r["ids"])) for r in read_jsonl(tiny_run / "data" / "targets.jsonl")]
    sets = eval_sets(load_prompts(tiny_run), targets)
    s = sets["qa_out"]
    batched = greedy_match(model, tok, s.prompts, s.targets, batch_size=64)
    single = greedy_match(model, tok, s.prompts, s.targets, batch_size=1)
    assert (batched == single).all()
    assert batched.sum() > 0
    assert score(batched, s.attributes) == metrics(tiny_run)["stage"]["qa_out"]
    # Every set in one decoding pass, as `evaluate` scores them: each scores as it does alone.
    together = evaluate(model, tok, sets, batch_size=64)
    assert together == {
        name: score(greedy_match(model, tok, x.prompts, x.targets, batch_size=1), x.attributes)
        for name, x in sets.items()
    }
    assert together == {name: metrics(tiny_run)["stage"][name] for name in sets}


def test_rerunning_the_same_command_skips_finished_work(tiny_run, capsys):
    before = (tiny_run / "metrics.json").read_text()
    weights = load_file(tiny_run / "checkpoints" / "mix" / "final" / "model.safetensors")
    assert run_cli("--workspace", tiny_run.parent.parent, "run", "--preset", "tiny") == 0
    assert "done already" in capsys.readouterr().out
    assert (tiny_run / "metrics.json").read_text() == before
    again = load_file(tiny_run / "checkpoints" / "mix" / "final" / "model.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_qa_phase_sweep_trains_the_shared_bio_phase_once(tiny_run, tmp_path, capsys):
    workspace = tmp_path
    shutil.copytree(tiny_run, workspace / "runs" / tiny_run.name)
    first = workspace / "runs" / tiny_run.name
    argv = ["--workspace", workspace, "run", "--preset", "tiny", "--strategy", "stage", "--set", "train.qa.lr=3e-3"]
    assert run_cli(*argv, "--name", "hot-qa") == 0
    assert "train-bio: done (reused_from tiny-stage+mix-s0" in capsys.readouterr().out
    swept = workspace / "runs" / "hot-qa"
    assert bio(swept).read_bytes() == bio(first).read_bytes()
    assert metrics(swept)["train"]["bio"] == {**metrics(first)["train"]["bio"], "reused_from": first.name}
    assert scores(swept, "bio") == scores(first, "bio")  # evaluated again, on the same weights
    assert "reused_from" not in metrics(swept)["train"]["stage"]  # its QA phase differs: trained here
    assert scores(swept, "stage") != scores(first, "stage")

    # Reuse is only a shortcut: training the BIO phase here again gives the very same weights.
    assert run_cli(*argv, "--name", "fresh", "--no-reuse") == 0
    fresh = workspace / "runs" / "fresh"
    assert "reused_from" not in metrics(fresh)["train"]["bio"]
    assert bio(fresh).read_bytes() == bio(first).read_bytes()
    assert scores(fresh, "stage") == scores(swept, "stage")

    # The sweep as a table: one row per run and model, the swept setting as a column.
    capsys.readouterr()
    assert run_cli("--workspace", workspace, "compare", first.name, "hot-qa", "--markdown") == 0
    header, rows = _markdown_rows(capsys.readouterr().out)
    assert header[:3] == ["Run", "qa.lr", "Model"]  # strategies differ too, but rows show the models
    stage = {r["Run"]: r for r in rows if r["Model"] == "Stage-tuned"}
    assert stage[first.name]["qa.lr"] == "0.002" and stage["hot-qa"]["qa.lr"] == "0.003"
    for run, row in ((first, stage[first.name]), (swept, stage["hot-qa"])):
        m = metrics(run)
        assert row["QA out"] == f"{m['stage']['qa_out']['avg']:.1f}"
        assert row["out Job"] == f"{m['stage']['qa_out']['job']:.1f}"
        assert row["Train s"] == f"{m['train']['bio']['train_seconds'] + m['train']['stage']['train_seconds']:.0f}"
    assert [r["Model"] for r in rows if r["Run"] == first.name] == ["BIO-tuned", "Stage-tuned", "Mix-tuned"]
    # With no runs named, every run in the workspace; `fresh` repeats `hot-qa` (same settings, same
    # seed): two rows of one seed each, not one row passing them off as two seeds.
    assert run_cli("--workspace", workspace, "compare", "--markdown", "--models", "stage") == 0
    header, rows = _markdown_rows(capsys.readouterr().out)
    assert sorted((r["Run"], r["Seeds"]) for r in rows) == [("fresh", "1"), ("hot-qa", "1"), (first.name, "1")]
    assert {r["QA out"] for r in rows if r["Run"] in ("fresh", "hot-qa")} == {
        f"{metrics(swept)['stage']['qa_out']['avg']:.1f}"
    }


def _markdown_rows(out: str) -> tuple[list[str], list[dict[str, str]]]:
    lines = out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_a_phase_trained_by_an_older_data_plan_is_trained_again_not_reused(tiny_run, tmp_path):
    workspace = tmp_path
    old = workspace / "runs" / tiny_run.name
    shutil.copytree(tiny_run, old)
    done = old / "done" / "train-bio.json"
    info = json.loads(done.read_text())
    assert info.pop("plan") == 2
    done.write_text(json.dumps(info))  # as the packer before first fit wrote it: no plan version
    assert (
        run_cli(
            "--workspace",
            workspace,
            "run",
            "--preset",
            "tiny",
            "--strategy",
            "stage",
            "--set",
            "train.qa.lr=3e-3",
            "--name",
            "new",
        )
        == 0
    )
    new = workspace / "runs" / "new"
    assert "reused_from" not in metrics(new)["train"]["bio"]
    assert metrics(new)["train"]["bio"]["plan"] == 2
    assert bio(new).read_bytes() == bio(old).read_bytes()  # this copy was in truth trained by plan 2


class _Interrupt:
    """A listener that stops training mid-phase the way Ctrl-C does."""

    def __init__(self, step: str, after: int):
        self.step, self.after = step, after

    def __call__(self, event):
        if event["kind"] == "progress" and event["step"] == self.step and event["done"] >= self.after:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    spec = build_spec("tiny", strategies=["mix"], overrides=["train.checkpoint_every=40"])
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    with RunFolder.create_or_resume(whole, spec) as run:
        execute(run)
    with RunFolder.create_or_resume(cut, spec) as run:
        run.listeners.append(_Interrupt("train-mix", after=100))
        try:
            execute(run, reuse=False)  # else `whole`, beside it, lends its finished phase
            raise AssertionError("the interrupt did not fire")
        except KeyboardInterrupt:
            pass
    state = json.loads((cut / "checkpoints" / "mix" / "last" / "state.json").read_text())
    assert 100 <= state["step"] < state["total"]
    assert not (cut / "done" / "train-mix.json").exists()
    assert run_cli("--workspace", tmp_path, "resume", str(cut), "--no-reuse") == 0
    a = load_file(whole / "checkpoints" / "mix" / "final" / "model.safetensors")
    b = load_file(cut / "checkpoints" / "mix" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = metrics(whole), metrics(cut)
    for m in (ma, mb):
        m["mix"].pop("questions_per_s"), m["untrained"].pop("questions_per_s")
        m.pop("train")
    assert ma == mb

    # The same with a real Ctrl-C (SIGINT) sent to a real process mid-training.
    argv = [
        sys.executable,
        "-m",
        "jobs.cli",
        "--workspace",
        tmp_path,
        "run",
        "--preset",
        "tiny",
        "--strategy",
        "mix",
        "--set",
        "train.checkpoint_every=40",
        "--name",
        "sig",
    ]
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "runs" / "sig" / "events.jsonl"
    wait_until(
        lambda: (events.exists() and '"step": "train-mix", "done"' in events.read_text()) or proc.poll() is not None,
        "training to start",
    )
    proc.send_signal(signal.SIGINT)
    assert proc.wait() == 130
    assert "interrupted" in proc.stderr.read()
    assert not (tmp_path / "runs" / "sig" / "done" / "train-mix.json").exists()
    assert run_cli("--workspace", tmp_path, "resume", "sig") == 0
    c = load_file(tmp_path / "runs" / "sig" / "checkpoints" / "mix" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_several_seeds_report_mean_and_std(tmp_path, capsys):
    assert (
        run_cli(
            "--workspace",
            tmp_path,
            "run",
            "--preset",
            "tiny",
            "--strategy",
            "bio",
            "--seeds",
            "0",
            "1",
            "--set",
            "train.bio.epochs=20",
        )
        == 0
    )
    out = capsys.readouterr().out
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and runs[0].endswith(runs[1][-6:])  # one config hash, two seeds
    values = [metrics(tmp_path / "runs" / r)["bio"]["bio"]["avg"] for r in runs]
    assert f"{np.mean(values):.1f} ± {np.std(values):.1f}" in out
    assert "seeds 0, 1" in out
    # Their curves are drawn as one configuration: the mean over seeds with the seeds' range.
    assert run_cli("--workspace", tmp_path, "plot", *runs, "--out", tmp_path / "both.png") == 0
    assert plt.imread(tmp_path / "both.png").shape[1] > 1000
    # Different seeds make different people.
    people = [read_jsonl(tmp_path / "runs" / r / "data" / "people.jsonl")[0]["name"] for r in runs]
    assert people[0] != people[1]


def test_qa_only_training_fits_its_questions_but_not_the_biographies(tmp_path):
    assert (
        run_cli(
            "--workspace",
            tmp_path,
            "run",
            "--preset",
            "tiny",
            "--strategy",
            "qa",
            "--set",
            "train.qa.epochs=60",
            "--name",
            "qa",
        )
        == 0
    )
    m = metrics(tmp_path / "runs" / "qa")
    assert set(m) >= {"majority", "untrained", "qa"} and "bio" not in m
    # QA-in answers are memorised; BIO prompts were never trained on.
    assert m["qa"]["qa_in"]["avg"] >= 80
    assert m["qa"]["bio"]["avg"] < m["qa"]["qa_in"]["avg"]


def test_a_bf16_run_learns_as_fp32_does_and_says_when_the_cpu_cannot(tmp_path, monkeypatch, capsys):
    """train.precision=bf16 end to end (train, evaluate, dump): the BIO facts are learnt, env.json says
    what the session computed in, and the store's fingerprint records bf16 products. On a CPU without
    bf16 units the run says so in one line and computes in fp32."""
    import jobs.run.model as models

    argv = ["--workspace", tmp_path, "run", "--preset", "tiny", "--strategy", "bio", "--set", "train.precision=bf16"]
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert run_cli(*argv, "--name", "half") == 0
    assert metrics(tmp_path / "runs" / "half")["bio"]["bio"]["avg"] >= 90
    assert json.loads((tmp_path / "runs" / "half" / "env.json").read_text())[-1]["precision"] == "bf16"
    assert '"compute": "bfloat16"' in (tmp_path / "runs" / "half" / "activations.zarr" / "zarr.json").read_text()
    assert "no bf16 units" not in capsys.readouterr().out

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert run_cli(*argv, "--name", "fallback", "--no-dump") == 0
    out = capsys.readouterr().out
    assert out.count("note: train.precision is bf16, but this CPU has no bf16 units") == 1
    assert json.loads((tmp_path / "runs" / "fallback" / "env.json").read_text())[-1]["precision"] == "fp32"
