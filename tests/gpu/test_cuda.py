"""What runs on a CUDA GPU, held against the CPU's numbers: bf16 training, packed rows' masks in SDPA,
gradient checkpointing and torch.compile, a cancelled and resumed phase, and every family's training,
capture, dump and patching on the device. Marked `gpu`: skipped in one line without a GPU;
`bash benchmarks/gpu/check.sh` runs them on one, and its `--rehearse` on the CPU (tests/gpu/conftest.py).
The tolerances are the CPU tests' (tests/jobs/test_train.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import store
from jobs.run.model import autocast, build_model, computes_in, training_attention
from jobs.run.spec import build_spec
from jobs.run.tokenizer import train_word_tokenizer
from jobs.run.train import Example, collate, packed_forward, plan_batches, train_phase
from tests.gpu.conftest import runnable
from tests.helpers import metrics, run_cli
from tests.jobs.test_families import FAMILIES
from tests.jobs.test_hf_checkpoint import _save_checkpoint, _tiny_llama

pytestmark = pytest.mark.gpu
if not runnable():  # one line in the summary for the whole file
    pytest.skip("no CUDA GPU here: `bash benchmarks/gpu/check.sh` runs these on one", allow_module_level=True)

TEXTS = [
    "Ada Byron took birth in London, UK.",
    "What is the job of Ada Byron? poet.",
    "Ada Byron has a blood type of O-.",
    "Ada Byron worked for Morales LLC.",
]


class Cancelled(Exception):
    pass


def _train(device, folder, *sets, steps=6, cancel_at=None):
    """A few Mix steps of the tiny Llama on `device`, as tests/jobs/test_train.py's `_train_briefly`;
    with `cancel_at`, Ctrl-C arrives after that step (the phase keeps what it did, as a user's would)."""
    tok = train_word_tokenizer(TEXTS)
    spec = build_spec(
        "tiny", overrides=[f"train.mix.steps={steps}", "train.mix.batch_size=2", "train.row_len=32", *sets]
    )
    model = build_model(spec.model, tok, seed=0).to(device)
    examples = [Example(np.array(ids), 0) for ids in tok(TEXTS * 3)["input_ids"]]
    plan = plan_batches(np.array([len(e.ids) for e in examples]), spec.train.mix, spec.train, seed=0)
    losses = []

    def progress(info):
        losses.append(info["loss"])
        if info["step"] == cancel_at:
            raise KeyboardInterrupt

    try:
        train_phase(model, tok, examples, plan, spec.train.mix, spec.train, folder, progress=progress)
    except KeyboardInterrupt:
        raise Cancelled from None
    return model, losses


def test_bf16_on_the_device_trains_as_fp32_does(device, tmp_path):
    plain, plain_losses = _train(device, tmp_path / "fp32")
    half, half_losses = _train(device, tmp_path / "bf16", "train.precision=bf16")
    assert half_losses[-1] < half_losses[0]
    if computes_in(device, "bf16") == "bf16":
        assert not np.allclose(half_losses, plain_losses, rtol=1e-5, atol=0)  # bf16 products, not fp32's
    np.testing.assert_allclose(half_losses, plain_losses, rtol=0.05)
    assert {p.dtype for p in half.parameters()} == {torch.float32}  # fp32 masters and AdamW state
    moments = load_file(tmp_path / "bf16" / "last" / "optimizer.safetensors")
    assert {t.dtype for t in moments.values() if t.dim()} == {torch.float32}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_rows_do_not_attend_to_each_other_in_the_training_attention(device, precision):
    """SDPA with packed rows' position ids (its CUDA kernels take the mask transformers makes of them)."""
    texts = TEXTS[:3]
    tok = train_word_tokenizer(texts)
    model = build_model(build_spec("tiny").model, tok, seed=0).to(device).eval()
    model.set_attn_implementation(training_attention(device, "auto", precision, model.config.hidden_size))
    examples = [Example(np.array(ids), 0) for ids in tok(texts)["input_ids"]]
    batch = {k: v.to(device) for k, v in collate([np.array([0, 1, 2])], examples, tok.pad_token_id).items()}
    tolerance = 1e-4 if computes_in(device, precision) == "fp32" else 3e-2
    with torch.no_grad(), autocast(device, precision):
        packed = packed_forward(model, batch).logits[0].float()
        at = 0
        for ex in examples:
            alone = model(input_ids=torch.from_numpy(ex.ids)[None].to(device)).logits[0].float()
            torch.testing.assert_close(packed[at : at + len(ex.ids)], alone, rtol=tolerance, atol=tolerance)
            at += len(ex.ids)


@pytest.mark.parametrize("setting", ["train.gradient_checkpointing=true", "train.compile=true"])
def test_checkpointing_and_compile_give_the_plain_steps_losses(device, tmp_path, setting):
    plain, plain_losses = _train(device, tmp_path / "plain")
    other, other_losses = _train(device, tmp_path / "other", setting)
    assert len(other_losses) == 6 and other_losses[-1] < other_losses[0]
    np.testing.assert_allclose(other_losses, plain_losses, rtol=1e-4)
    for (name, a), b in zip(plain.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


def test_a_cancelled_and_resumed_phase_ends_byte_identical_to_an_uninterrupted_one(device, tmp_path):
    """Ctrl-C after step 5 of 12 keeps a checkpoint of step 5; the same phase started again resumes
    there and ends with the same weights and optimizer state, bit for bit. Two uninterrupted runs are
    compared first: a device whose step is not deterministic fails here, saying so."""
    whole, losses = _train(device, tmp_path / "whole", steps=12)
    again, _ = _train(device, tmp_path / "again", steps=12)
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), f"two uninterrupted runs differ on {device} ({name}): the step is not deterministic"
    with pytest.raises(Cancelled):
        _train(device, tmp_path / "cut", steps=12, cancel_at=5)
    assert load_file(tmp_path / "cut" / "last" / "model.safetensors")  # the checkpoint Ctrl-C kept
    resumed, resumed_losses = _train(device, tmp_path / "cut", steps=12)
    assert resumed_losses == losses[5:]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for name in ("model.safetensors", "optimizer.safetensors"):
        a, b = load_file(tmp_path / "whole" / "last" / name), load_file(tmp_path / "cut" / "last" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("family", ["llama", *FAMILIES])
def test_a_family_trains_dumps_and_patches_on_the_device_as_on_the_cpu(family, corpus, device, tmp_path):
    """A tiny checkpoint of each family trained on the device (fp32), its activations dumped there and
    again on the CPU (equal to float16 rounding), and patched there and on the CPU (the same table,
    to one person's answer)."""
    torch.manual_seed(0)
    _save_checkpoint(tmp_path / family, corpus, model=FAMILIES.get(family, _tiny_llama))
    ws = ("--workspace", tmp_path)
    train = ("--set", "train.bio.epochs=60", "--set", "train.row_len=256", "--set", "train.eval_every=0")
    assert (
        run_cli(
            *ws,
            "run",
            "--preset",
            "tiny",
            "--strategy",
            "stage",
            "--model",
            tmp_path / family,
            *train,
            "--name",
            family,
            "--device",
            str(device),
        )
        == 0
    )
    run = tmp_path / "runs" / family
    assert metrics(run)["bio"]["bio"]["avg"] >= 50  # it learned its BIO facts on the device
    trained = metrics(run)["train"]["bio"]
    assert trained.get("peak_gpu_bytes", 0) > 0 if device.type == "cuda" else "peak_gpu_bytes" not in trained
    assert run_cli(*ws, "dump", family, "--device", "cpu", "--out", tmp_path / "cpu.zarr", "--models", "stage") == 0
    on_device, on_cpu = store.open(run), store.open(tmp_path / "cpu.zarr")
    for fmt in ("bio_long", "qa"):
        for layer in range(on_device.layers):
            a = on_device.acts(fmt, layer, "job", model="stage").astype(np.float32)
            b = on_cpu.acts(fmt, layer, "job", model="stage").astype(np.float32)
            np.testing.assert_allclose(a, b, rtol=2**-9, atol=2**-9 * float(np.abs(b).max()))  # float16's step
    tables = {}
    for where in (str(device), "cpu"):
        csv = tmp_path / f"patch-{where}.csv"
        code = run_cli(
            *ws,
            "patch",
            family,
            "--models",
            "stage",
            "--device",
            where,
            "--no-cache",
            "--csv",
            csv,
            "--out",
            tmp_path / f"patch-{where}.png",
        )
        assert code == 0
        tables[where] = pd.read_csv(csv)
    a, b = tables[str(device)], tables["cpu"]
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    numbers = a.select_dtypes("number").columns
    people = len(store.open(run).people)
    assert (a[numbers] - b[numbers]).abs().max().max() <= 100 / people + 1e-6
