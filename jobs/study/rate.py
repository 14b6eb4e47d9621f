"""How fast this machine multiplies matrices at a model's shapes: the GEMM probe `reproduce
--dry-run` plans with, and the peak benchmarks/bench_gemm.py holds training against (MFU).

A decoder block's compute is its matrix products: per token, q and o (hidden x hidden), k and v
(hidden x kv width), gate and up (hidden x intermediate), down (intermediate x hidden), and once per
token the output head (hidden x vocabulary). The probe times each product once, with as many rows as
a training step has tokens (capped at PROBE_ROWS), in the precision the run computes in, and weighs
them as the model does. A peak is the best the machine does, and a shared machine is often busy:
each product is measured every time (a second or so in all) and the best rate ever measured on this
machine (CPU model, torch version, threads, precision, shape) is kept in the user's cache folder and
used, so a plan made while something else runs is not made from a slow moment.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

import torch

from jobs.errors import FactrecallError
from jobs.run.files import atomic_write_json, read_json, user_folder

PROBE_ROWS = 2048
PROBE_MIN_ROWS = 64
PROBE_FLOPS = 2e10  # at most this much work in one product (about 0.1 s in fp32 on a 2-core EPYC)
PROBE_SECONDS = 0.05  # repeat a product until this long has passed (at least 3 times), after one warm-up
CACHE_VERSION = 1
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# What any CPU thread can do, at the most and the least: a core with AMX tiles peaks near 2 TFLOP/s in
# bf16 (1,024 FLOP a cycle at 2 GHz), an AVX-512 core near 0.3 TFLOP/s in fp32; nothing that runs
# torch at all is below 10 MFLOP/s. A recorded rate outside these bounds (times the threads) is no
# machine's: the record is advice, never truth, and such a value is dropped and measured again.
MAX_FLOPS_PER_THREAD = 5e12
MIN_FLOPS_PER_THREAD = 1e7


def cache_file() -> Path | None:
    """~/.cache/factrecall/gemm.json (None without a home: nothing is recorded then)."""
    folder = user_folder("cache")
    return None if folder is None else folder / "gemm.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def products(config) -> list[tuple[int, int, int]]:
    """(times per token, k, n) of every matrix product a token's forward pass makes."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * (
        getattr(config, "head_dim", None) or hidden // heads
    )
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    return [
        (2 * layers, hidden, hidden),
        (2 * layers, hidden, kv),
        (2 * layers, hidden, inter),
        (layers, inter, hidden),
        (1, hidden, config.vocab_size),
    ]


def _seconds(m: int, k: int, n: int, dtype: torch.dtype) -> float:
    """Seconds for one (m x k) @ (k x n) product."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm-up: first-touch allocation and the library's kernel choice
    count, t0 = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - t0 < PROBE_SECONDS:
        a @ b
        count += 1
    return (time.perf_counter() - t0) / count


def plausible(rate: object, threads: int) -> bool:
    """Whether `rate` (FLOP/s) is one a CPU running `threads` threads could have measured."""
    return (
        isinstance(rate, (int, float))
        and not isinstance(rate, bool)
        and math.isfinite(rate)
        and MIN_FLOPS_PER_THREAD <= rate / max(threads, 1) <= MAX_FLOPS_PER_THREAD
    )


def _read_cache(file: Path | None, notes: list[str] | None = None) -> dict:
    """The recorded rates ({} when there are none); a damaged record, or a value no machine could have
    measured, is said in `notes` and left out (measured again, and the record rewritten)."""
    if file is None:
        return {}
    try:
        data = read_json(file, "it is measured again and rewritten", default={})
    except FactrecallError as err:
        if notes is not None:
            notes.append(str(err))
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version", CACHE_VERSION) != CACHE_VERSION
        or not isinstance(data.get("rates", {}), dict)
    ):
        if notes is not None:
            notes.append(f"{file} is not a GEMM record this factrecall wrote; it is measured again and rewritten")
        return {}
    rates, kept = data.get("rates", {}), {}
    for key, value in rates.items():
        threads = next(
            (
                int(part.split()[0])
                for part in str(key).split("|")
                if part.endswith(" threads") and part.split()[0].isdigit()
            ),
            1,
        )
        if plausible(value, threads):
            kept[key] = value
    if len(kept) < len(rates) and notes is not None:
        notes.append(
            f"{len(rates) - len(kept)} recorded GEMM rate(s) in {file} are not ones any CPU could measure "
            "(outside 10 MFLOP/s to 5 TFLOP/s a thread): dropped, measured again"
        )
    return kept


def gemm_rate(config, precision: str, rows: int, cache: bool = True) -> dict:
    """FLOP/s of the model's matrix products on this CPU in `precision` (`fp32` or `bf16`), with
    `rows` tokens a product (a training step's, capped at PROBE_ROWS). Returns the rate, the rate of
    each product (the best on record, and now), and whether the record beat every one measured now."""
    rows = max(1, min(rows, PROBE_ROWS))
    threads = torch.get_num_threads()
    prefix = f"{cpu_name()}|torch {torch.__version__}|{threads} threads|{precision}"
    notes: list[str] = []
    try:
        file = cache_file() if cache else None
    except FactrecallError as err:  # the cache folder is a link, or a file: the plan is made without a record
        file = None
        notes.append(f"{err}; no GEMM record is kept")
    rates = _read_cache(file, notes)
    flops = seconds = 0.0
    shown, cached = [], 0
    now: dict[str, float] = {}
    for times, k, n in products(config):
        m = max(PROBE_MIN_ROWS, min(rows, int(PROBE_FLOPS / (2 * k * n))))  # an output head of 128k: fewer rows
        key = f"{prefix}|{m}x{k}x{n}"
        if key not in now:  # q and o are often k and v's shape: measured once
            now[key] = 2 * m * k * n / _seconds(m, k, n, DTYPES[precision])
        best = rates.get(key)
        if best is not None and best > now[key]:
            cached += 1
        else:
            best = rates[key] = now[key]
        flops += times * 2 * k * n
        seconds += times * 2 * k * n / best
        shown.append({"rows": m, "k": k, "n": n, "times": times, "flops_per_s": round(best), "now": round(now[key])})
    if file is not None:
        try:
            atomic_write_json(file, {"version": CACHE_VERSION, "rates": {**_read_cache(file), **rates}})
        except (OSError, FactrecallError):  # a read-only home: the plan stands, the next one measures again
            pass
    return {
        "flops_per_s": flops / seconds,
        "products": shown,
        "rows": rows,
        "threads": threads,
        "precision": precision,
        "cached": cached == len(shown),
        "cpu": cpu_name(),
        "file": str(file),
        "notes": notes,
    }
