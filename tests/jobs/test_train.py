"""Packing and the optimizer schedule: what a batch holds, and that packed examples stay independent."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jobs.errors import FactrecallError
from jobs.run.model import build_model, cpu_has_bf16
from jobs.run.spec import build_spec
from jobs.run.tokenizer import train_word_tokenizer
from jobs.run.train import (
    Example,
    _pack,
    collate,
    lr_at,
    make_optimizer,
    packed_forward,
    plan_batches,
    save_checkpoint,
    train_phase,
)


def test_every_example_appears_once_per_epoch_in_rows_that_fit():
    spec = build_spec("tiny", overrides=["train.row_len=64", "train.mix.epochs=3", "train.mix.batch_size=5"])
    lengths = np.random.default_rng(0).integers(5, 40, size=101)
    plan = plan_batches(lengths, spec.train.mix, spec.train, seed=7)
    rows = [row for batch in plan for row in batch]
    assert all(lengths[row].sum() <= 64 for row in rows)
    assert all(len(batch) <= 5 for batch in plan)
    counts = np.bincount(np.concatenate(rows), minlength=101)
    assert (counts == 3).all()
    assert plan_batches(lengths, spec.train.mix, spec.train, seed=7)[3][0].tolist() == plan[3][0].tolist()
    # A fractional epoch takes a prefix of a shuffle; `steps` gives exactly that many batches.
    half = build_spec("tiny", overrides=["train.mix.epochs=1.5"])
    n = sum(len(r) for b in plan_batches(lengths, half.train.mix, half.train, seed=1) for r in b)
    assert n == 101 + round(0.5 * 101)
    fixed = build_spec("tiny", overrides=["train.mix.steps=17"])
    assert len(plan_batches(lengths, fixed.train.mix, fixed.train, seed=1)) == 17


def test_first_fit_fills_the_gaps_that_filling_one_row_at_a_time_leaves():
    # Mix-like data: long BIO entries among short QA pairs. The old packer closed a row as soon as
    # the next example did not fit; first fit puts a short example into an earlier row's gap.
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(61, 73, 200), rng.integers(11, 18, 960)])
    order = rng.permutation(len(lengths))
    rows = _pack(order, lengths, 128)
    assert sorted(np.concatenate(rows).tolist()) == list(range(len(lengths)))  # each example once
    assert all(lengths[r].sum() <= 128 for r in rows)
    used = lengths.sum() / (128 * len(rows))
    one_at_a_time, start, filled = [], 0, 0
    for k, i in enumerate(order):
        if filled + lengths[i] > 128:
            one_at_a_time.append(k - start)
            start, filled = k, 0
        filled += lengths[i]
    before = lengths.sum() / (128 * (len(one_at_a_time) + 1))
    assert used > 0.95 and before < 0.9, (used, before)
    # Examples that nearly fill a row alone close it at once, leaving the open rows to those with room.
    long_ = np.concatenate([rng.integers(120, 129, 800), rng.integers(4, 9, 200)])
    packed = _pack(rng.permutation(len(long_)), long_, 128)
    assert long_.sum() / (128 * len(packed)) > 0.97  # 0.965 when such rows held an open slot
    # Rows keep the shuffle's order locally: an example lands at most a few rows from its neighbours.
    first = {int(i): r for r, row in enumerate(rows) for i in row}
    assert max(abs(first[int(a)] - first[int(b)]) for a, b in zip(order, order[1:])) <= 16


def test_packed_examples_do_not_attend_to_each_other():
    texts = ["Ada Byron took birth in London, UK.", "What is the job of Ada Byron? poet.", "He has a blood type of O-."]
    tok = train_word_tokenizer(texts)
    model = build_model(build_spec("tiny").model, tok, seed=0).eval()
    examples = [Example(np.array(ids), 0) for ids in tok(texts)["input_ids"]]
    batch = collate([np.array([0, 1, 2])], examples, tok.pad_token_id)
    assert batch["position_ids"][0, : len(examples[0].ids)].tolist() == list(range(len(examples[0].ids)))
    with torch.no_grad():
        packed = packed_forward(model, batch).logits[0]
        at = 0
        for ex in examples:
            alone = model(input_ids=torch.from_numpy(ex.ids)[None]).logits[0]
            torch.testing.assert_close(packed[at : at + len(ex.ids)], alone, rtol=1e-4, atol=1e-4)
            at += len(ex.ids)


def test_labels_cover_qa_answers_only():
    tok = train_word_tokenizer(["What is the job of Ada Byron? poet."])
    head = tok("What is the job of Ada Byron?")["input_ids"]
    full = tok("What is the job of Ada Byron? poet.")["input_ids"]
    batch = collate([np.array([0])], [Example(np.array(full), len(head))], tok.pad_token_id)
    labels = batch["labels"][0].tolist()
    assert labels[: len(head)] == [-100] * len(head)
    assert labels[len(head) :] == full[len(head) :]


def test_a_checkpoint_from_another_data_plan_is_refused_not_continued(tmp_path):
    tok = train_word_tokenizer(["Ada Byron took birth in London, UK."])
    spec = build_spec("tiny")
    model = build_model(spec.model, tok, seed=0)
    examples = [Example(np.array(ids), 0) for ids in tok(["Ada Byron took birth in London, UK."] * 8)["input_ids"]]
    plan = plan_batches(np.array([len(e.ids) for e in examples]), spec.train.mix, spec.train, seed=0)
    opt = make_optimizer(model, spec.train.mix)
    packed_forward(model, collate(plan[0], examples, tok.pad_token_id)).loss.backward()
    opt.step()
    # A mid-phase checkpoint as the packer before first fit wrote it: no plan version in its state.
    save_checkpoint(
        tmp_path / "last",
        model,
        opt,
        {"step": 1, "total": len(plan), "tokens": 0, "train_seconds": 0.0, "loss": None, "curve": []},
    )
    with pytest.raises(FactrecallError, match=r"another data plan .* delete .*last"):
        train_phase(model, tok, examples, plan, spec.train.mix, spec.train, tmp_path, progress=lambda _: None)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    phase = build_spec("tiny", overrides=["train.bio.warmup_steps=10", "train.bio.min_lr_ratio=0.1"]).train.bio
    lrs = [lr_at(s, 100, phase) for s in range(100)]
    assert lrs[0] == phase.lr / 10 and lrs[9] == phase.lr
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:], lrs[10:]))
    assert abs(lr_at(100, 100, phase) - 0.1 * phase.lr) < 1e-12


def _train_briefly(tmp_path, *sets):
    texts = [
        "Ada Byron took birth in London, UK.",
        "What is the job of Ada Byron? poet.",
        "Ada Byron has a blood type of O-.",
        "Ada Byron worked for Morales LLC.",
    ]
    tok = train_word_tokenizer(texts)
    spec = build_spec("tiny", overrides=["train.mix.steps=6", "train.mix.batch_size=2", "train.row_len=32", *sets])
    model = build_model(spec.model, tok, seed=0)
    examples = [Example(np.array(ids), 0) for ids in tok(texts * 3)["input_ids"]]
    plan = plan_batches(np.array([len(e.ids) for e in examples]), spec.train.mix, spec.train, seed=0)
    losses = []
    train_phase(
        model, tok, examples, plan, spec.train.mix, spec.train, tmp_path, progress=lambda i: losses.append(i["loss"])
    )
    return model, losses


@pytest.mark.parametrize(
    "setting", ["train.gradient_checkpointing=true", "train.compile=true", "train.attention=eager"]
)
def test_runtime_settings_train_the_same_weights(tmp_path, setting):
    """Gradient checkpointing, torch.compile and the attention kernel (eager, packing checked with it)
    change how a step is computed, not what it computes: the same losses and weights as the plain step
    (to float32 rounding), and the model is left as it was (no recomputation switched on for
    evaluation, its own attention kernel back)."""
    from jobs.run.model import training_attention

    cpu = torch.device("cpu")
    assert (
        training_attention(cpu, "auto", "fp32", 128)
        == training_attention(torch.device("cuda"), "auto", "bf16", 128)
        == "sdpa"
    )
    assert training_attention(cpu, "auto", "bf16", 128) == ("eager" if cpu_has_bf16() else "sdpa")
    assert training_attention(cpu, "auto", "bf16", 576) == "sdpa"  # SmolLM2-135M's width: SDPA is faster there
    plain, plain_losses = _train_briefly(tmp_path / "plain")
    other, other_losses = _train_briefly(tmp_path / "other", setting)
    assert plain.config._attn_implementation == other.config._attn_implementation == "sdpa"
    assert len(other_losses) == 6 and other_losses[-1] < other_losses[0]
    np.testing.assert_allclose(other_losses, plain_losses, rtol=1e-4)
    for (name, a), b in zip(plain.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in other.modules())
    # Neither is part of the run's identity: switching one on resumes the same run.
    assert build_spec("tiny", overrides=[setting]).identity() == build_spec("tiny").identity()


def test_a_model_that_lets_packed_examples_see_each_other_is_refused(monkeypatch):
    """Were position ids not to reach the attention mask (a transformers version or attention
    implementation that ignores them), packed rows would leak; training refuses to start."""
    import jobs.run.train

    texts = ["Ada Byron took birth in London, UK.", "What is the job of Ada Byron? poet.", "He has a blood type of O-."]
    tok = train_word_tokenizer(texts)
    model = build_model(build_spec("tiny").model, tok, seed=0)
    examples = [Example(np.array(ids), 0) for ids in tok(texts)["input_ids"]]
    jobs.run.train.check_packing(model, examples, tok.pad_token_id)  # isolated: passes
    monkeypatch.setattr(
        jobs.run.train, "packed_forward", lambda m, batch: m(input_ids=batch["input_ids"], use_cache=False)
    )
    with pytest.raises(
        FactrecallError,
        match=r"packed examples attend to each other in this 'llama' model .* "
        r"--set train.packing=false",
    ):
        jobs.run.train.check_packing(model, examples, tok.pad_token_id)
    assert model.training  # left as it was found


def test_bf16_trains_in_bf16_over_fp32_weights_and_optimizer_state(tmp_path, monkeypatch):
    """train.precision=bf16 on a CPU with bf16 units: the products are bf16 (the losses differ from
    fp32's, beyond float32 rounding, yet stay close and fall), while the weights and AdamW's moments
    stay float32. Without bf16 units it computes in fp32, exactly as a fp32 run."""
    import jobs.run.model as models

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    plain, plain_losses = _train_briefly(tmp_path / "fp32")
    half, half_losses = _train_briefly(tmp_path / "bf16", "train.precision=bf16")
    assert half_losses[-1] < half_losses[0]
    assert not np.allclose(half_losses, plain_losses, rtol=1e-5, atol=0)  # bf16 products: not fp32's numbers
    np.testing.assert_allclose(half_losses, plain_losses, rtol=0.05)  # but the same training
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    moments = load_file(tmp_path / "bf16" / "last" / "optimizer.safetensors")
    assert moments and {t.dtype for name, t in moments.items() if t.dim()} == {torch.float32}

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    fallback, fallback_losses = _train_briefly(tmp_path / "none", "train.precision=bf16")
    assert fallback_losses == plain_losses
    cpu = torch.device("cpu")
    assert models.computes_in(cpu, "bf16") == "fp32" and "no bf16 units" in models.precision_note(cpu, "bf16")
    assert models.precision_note(cpu, "fp32") is None


def test_precision_is_part_of_a_runs_identity_only_when_not_fp32():
    base = build_spec("cpu", overrides=["train.precision=fp32"])
    assert "precision" not in base.identity()["train"]  # runs made before the setting keep their names and keys
    half = build_spec("cpu")
    assert half.identity()["train"]["precision"] == "bf16"  # the cpu preset's default since 2026-12-02
    assert half.phase_key("bio") != base.phase_key("bio")  # a fp32 run cannot lend a bf16 run its phase
    assert base.default_name() != half.default_name() == "cpu-stage+mix-s0"
    assert build_spec("paper").train.precision == "bf16" and build_spec("tiny").train.precision == "fp32"
