"""The dry run's cost model (`jobs.study.dryrun` prices a study with it): the share of the GEMM
probe's rate that training, evaluation and the dump reach on a CPU (MFU), the seconds a probe sweep
takes, the bytes training holds, and the tokens a phase's batches train on and compute.
"""

from __future__ import annotations

import numpy as np

# The share of the GEMM probe's rate that each kind of work reaches on a CPU, by precision and by the
# model's hidden size: model FLOPs (6 x N x computed tokens training, 2 x N x tokens forward) a second
# over the probe's FLOP/s, on a 2-core EPYC. A tiny model spends much of a step outside its matrix
# products (norms, attention, the optimizer), the more so in bf16, whose products are fast; a larger
# one spends more of it inside them. Measured points, interpolated in log(hidden) and held flat
# beyond them (`shares`), all on one host by benchmarks/bench_gemm.py (training, evaluation) and the
# studies (dump, evaluation; docs/pretrained.md):
# - hidden 128, the cpu preset: training 76% and 30%, evaluation 68% and 22%, a bare forward 49% in bf16;
# - hidden 576, SmolLM2-135M: training 61% and 46% (the smol study's Mix phase: 47%), evaluation and
#   dump in bf16 from the smol study's runs; fp32 evaluation and dump there are not measured (taken
#   as the earlier host's 50% and 55%), nor is the fp32 forward at 128 (a bare forward there ran at
#   the probe's rate or above: the fp32 probe at these small shapes is noisy).
# The share depends on the host, not only the shape: an earlier host of the same name had twice
# the bf16 GEMM rate (810 GFLOP/s against 399 at the cpu preset's shapes) but trained only 1.27x
# faster (19% of its peak); there the plan is about 1.5x long (benchmarks/RESULTS.md, "Precision").
MFU = {
    "fp32": {128: {"train": 0.76, "eval": 0.68, "forward": 0.70}, 576: {"train": 0.61, "eval": 0.50, "forward": 0.55}},
    "bf16": {128: {"train": 0.30, "eval": 0.22, "forward": 0.45}, 576: {"train": 0.46, "eval": 0.43, "forward": 0.58}},
}
# Seconds a probe sweep spends per layer, by hidden size: the cpu preset's study (194 s for 270
# sweeps of 4 layers, 1,000 people) and the smol study (321 s for 36 sweeps of 30 layers, 150
# people). L-BFGS's iterations over hidden x classes weights dominate a fit, not the people.
# With the control task's probes a sweep fits twice the probes (its cost measured on the cpu preset's
# seed 0: stage 1.5 s -> 3.5 s a sweep, loaded machine): x2.
SWEEP_LAYER_S = {128: 2 * 194 / 270 / 4, 576: 2 * 321 / 36 / 30}
# Those sweeps ran on 2 threads. A fit is matrix products over every person at once, so more threads are
# taken to cut its time in proportion (an assumption, not a measurement: the GPU check measures it on a
# 16-core host, benchmarks/gpu/); fewer are never taken to slow it.
SWEEP_THREADS = 2


def _by_hidden(hidden: int, points: dict[int, float]) -> float:
    """A value measured at some hidden sizes, interpolated in log(hidden), held flat beyond them."""
    sizes = sorted(points)
    return float(np.interp(np.log(hidden), np.log(sizes), [points[h] for h in sizes]))


def shares(computes: str, hidden: int) -> dict[str, float]:
    """MFU of training, evaluation and the forward pass (dump) for a model of this hidden size."""
    points = MFU[computes]
    return {
        work: _by_hidden(hidden, {h: share[work] for h, share in points.items()})
        for work in next(iter(points.values()))
    }


def sweep_seconds(hidden: int, layers: int, threads: int = SWEEP_THREADS) -> float:
    """Seconds one probe sweep (every layer, WQA and WBIO) takes on `threads` CPU threads."""
    return layers * _by_hidden(hidden, SWEEP_LAYER_S) * SWEEP_THREADS / max(threads, SWEEP_THREADS)


def training_memory(
    total: int, peak_tokens: int, layers: int, hidden: int, vocab: int, bytes_act: int, checkpointing: bool
) -> dict[str, int]:
    """Bytes while training (see jobs.study.dryrun's docstring for where each term comes from)."""
    block = peak_tokens * hidden * 17 * bytes_act
    kept = peak_tokens * layers * hidden * bytes_act + block if checkpointing else layers * block
    memory = {"weights_optimizer": 16 * total, "activations": kept + peak_tokens * vocab * 8}
    memory["total"] = sum(memory.values())
    return memory


def batch_tokens(batches: list[list[np.ndarray]], lengths: np.ndarray, row_len: int | None) -> tuple[int, int, int]:
    """(real tokens, computed tokens, the widest batch's tokens) of a phase's batches, each a list of
    rows of example indices: rows of `row_len` when packed, else padded to the batch's longest
    example. In numpy over all rows at once: the paper preset's runs have hundreds of thousands of
    rows, and a Python loop of numpy calls over them took most of a dry run's time."""
    rows = [row for batch in batches for row in batch]
    flat = lengths[np.concatenate(rows)]
    per_batch = np.array([len(batch) for batch in batches])
    real = int(flat.sum())
    if row_len is not None:
        widths = np.full(len(batches), row_len)
    else:
        row_starts = np.concatenate(([0], np.cumsum([len(row) for row in rows])[:-1]))
        batch_starts = np.concatenate(([0], np.cumsum(per_batch)[:-1]))
        widths = np.maximum.reduceat(np.maximum.reduceat(flat, row_starts), batch_starts)
    tokens = per_batch * widths
    return real, int(tokens.sum()), int(tokens.max())
