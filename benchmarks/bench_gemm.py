"""Training and evaluation against what this CPU can do: its own fp32 and bf16 matrix-product peak at
each model's shapes (`jobs.study.rate.gemm_rate`, the dry run's probe, measured here uncached), and
the model FLOP/s the product reaches, as a fraction of that peak (MFU), in the same run.

- the cpu preset's model (1.4M parameters) on its Mix data: training (6 x N x tokens a second, N
  the parameters a token's compute passes through), and evaluation (batched greedy decoding of the
  QA-out questions) against a bare batched forward pass over the same prompts;
- a model of SmolLM2-135M's shape (random weights: nothing is downloaded) on rows of random tokens.

    python benchmarks/bench_gemm.py [--steps 20] [--big-steps 3] [--questions 512] [--skip-big]

Prints a markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_spine, beside this file
from bench_spine import mix_examples, ours_train  # noqa: E402 - benchmarks/ is the script's folder

from jobs.run.evaluate import greedy_match  # noqa: E402
from jobs.run.model import autocast, build_model, cpu_has_bf16, use_cores  # noqa: E402
from jobs.study.dryrun import compute_parameters  # noqa: E402
from jobs.study.rate import cpu_name, gemm_rate  # noqa: E402

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    tie_word_embeddings=True,
)


def with_precision(spec, precision: str):
    return spec.model_copy(update={"train": spec.train.model_copy(update={"precision": precision})})


@torch.inference_mode()
def bare_forward(model, tok, prompts: list[str], batch_size: int, precision: str) -> float:
    """Prompts a second through one forward pass each, batched and left-padded as evaluation batches them."""
    encoded = tok(prompts, add_special_tokens=True)["input_ids"]
    t0 = time.perf_counter()
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tok.pad_token_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, e in enumerate(chunk):
            ids[r, width - len(e) :], mask[r, width - len(e) :] = torch.tensor(e), 1
        with autocast(torch.device("cpu"), precision):
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    return len(encoded) / (time.perf_counter() - t0)


def cpu_preset(args, precisions) -> list[str]:
    spec, tok, examples, sets = mix_examples(args.people)
    model = build_model(spec.model, tok, seed=0)
    _, n = compute_parameters(model)
    rows = spec.train.row_len * spec.train.mix.batch_size
    s = sets["qa_out"].subset(args.questions, seed=0)
    prompt_tokens = sum(len(ids) for ids in tok(s.prompts)["input_ids"]) / len(s.prompts)
    answer_tokens = sum(len(t) for t in s.targets) / len(s.targets)
    lines = []
    for precision in precisions:
        peak = gemm_rate(model.config, precision, rows, cache=False)["flops_per_s"]
        tokens_per_s = ours_train(with_precision(spec, precision), tok, examples, args.steps)
        train = 6 * n * tokens_per_s
        model.eval()
        t0 = time.perf_counter()
        greedy_match(model, tok, s.prompts, s.targets, batch_size=spec.train.eval_batch_size, precision=precision)
        qps = len(s.prompts) / (time.perf_counter() - t0)
        fwd = bare_forward(model, tok, s.prompts, spec.train.eval_batch_size, precision)
        evaluation = 2 * n * (prompt_tokens + answer_tokens) * qps
        lines += [
            f"| cpu preset, {precision}: GEMM peak at its shapes ({rows:,} rows → {min(rows, 2048):,}) | "
            f"{peak / 1e9:,.0f} GFLOP/s | | |",
            f"| cpu preset, {precision}: training, {args.steps} Mix steps | {tokens_per_s:,.0f} tokens/s = "
            f"{train / 1e9:,.1f} GFLOP/s | MFU {train / peak:.1%} | |",
            f"| cpu preset, {precision}: evaluation, {len(s.prompts)} QA-out questions (vs a bare batched forward "
            f"of the same prompts) | {qps:,.0f} questions/s = {evaluation / 1e9:,.1f} GFLOP/s | "
            f"MFU {evaluation / peak:.1%} "
            f"| {qps / fwd:.2f}x of {fwd:,.0f} prompts/s |",
        ]
    return lines


def smollm2(args, precisions) -> list[str]:
    config = LlamaConfig(**SMOLLM2_135M)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    total, n = compute_parameters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, config.vocab_size, (args.big_rows, args.big_len))
    lines = []
    for precision in precisions:
        peak = gemm_rate(config, precision, batch.numel(), cache=False)["flops_per_s"]
        seconds = []
        for step in range(args.big_steps + 1):  # the first warms up
            t0 = time.perf_counter()
            with autocast(torch.device("cpu"), precision):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step:
                seconds.append(time.perf_counter() - t0)
        tokens_per_s = batch.numel() * len(seconds) / sum(seconds)
        train = 6 * n * tokens_per_s
        lines += [
            f"| SmolLM2-135M shape ({total / 1e6:,.0f}M), {precision}: GEMM peak at its shapes "
            f"({batch.numel():,} rows) | {peak / 1e9:,.0f} GFLOP/s | | |",
            f"| SmolLM2-135M shape, {precision}: training, {args.big_steps} steps of {args.big_rows}x{args.big_len} "
            f"tokens | {tokens_per_s:,.0f} tokens/s = {train / 1e9:,.1f} GFLOP/s | MFU {train / peak:.1%} | |",
        ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20, help="training steps of the cpu preset (default 20)")
    ap.add_argument("--questions", type=int, default=512)
    ap.add_argument("--big-steps", type=int, default=3, help="training steps of SmolLM2-135M's shape (default 3)")
    ap.add_argument("--big-rows", type=int, default=4)
    ap.add_argument("--big-len", type=int, default=256)
    ap.add_argument("--skip-big", action="store_true", help="only the cpu preset")
    args = ap.parse_args()
    threads = use_cores()
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    print(f"machine: {cpu_name()}, {threads} threads, torch {torch.__version__}; bf16 units: {cpu_has_bf16()}\n")
    print("| measure | rate | against the GEMM peak | against a bare forward |")
    print("|---|---|---|---|")
    for line in cpu_preset(args, precisions) + ([] if args.skip_big else smollm2(args, precisions)):
        print(line, flush=True)


if __name__ == "__main__":
    main()
