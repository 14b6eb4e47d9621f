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

import json
import platform
import time
from pathlib import Path

import platformdirs
import torch

from jobs.run.files import atomic_write_json

PROBE_ROWS = 2048
PROBE_MIN_ROWS = 64
PROBE_FLOPS = 2e10  # at most this much work in one product (about 0.1 s in fp32 on a 2-core EPYC)
PROBE_SECONDS = 0.05  # repeat a product until this long has passed (at least 3 times), after one warm-up
CACHE_VERSION = 1
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cache_file() -> Path:
    return platformdirs.user_cache_path("factrecall") / "gemm.json"


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
    kv = (getattr(config, "num_key_value_heads", None) or heads) * (getattr(config, "head_dim", None) or hidden // heads)
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    return [(2 * layers, hidden, hidden), (2 * layers, hidden, kv), (2 * layers, hidden, inter), (layers, inter, hidden),
            (1, hidden, config.vocab_size)]


def _seconds(m: int, k: int, n: int, dtype: torch.dtype) -> float:
    """Seconds for one (m x k) @ (k x n) product."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm-up: first-touch allocation and the library's kernel choice
    count, t0 = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - t0 < PROBE_SECONDS:
        a @ b
        count += 1
    return (time.perf_counter() - t0) / count


def _read_cache(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measured again, and rewritten
        return {}
    return data.get("rates", {}) if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}


def gemm_rate(config, precision: str, rows: int, cache: bool = True) -> dict:
    """FLOP/s of the model's matrix products on this CPU in `precision` (`fp32` or `bf16`), with
    `rows` tokens a product (a training step's, capped at PROBE_ROWS). Returns the rate, the rate of
    each product (the best on record, and now), and whether the record beat every one measured now."""
    rows = max(1, min(rows, PROBE_ROWS))
    threads = torch.get_num_threads()
    prefix = f"{cpu_name()}|torch {torch.__version__}|{threads} threads|{precision}"
    file = cache_file()
    rates = _read_cache(file) if cache else {}
    flops = seconds = 0.0
    shown, cached = [], 0
    now: dict[str, float] = {}
    for times, k, n in products(config):
        m = max(PROBE_MIN_ROWS, min(rows, int(PROBE_FLOPS / (2 * k * n))))  # an output head of 128k: fewer rows
        key = f"{prefix}|{m}x{k}x{n}"
        if key not in now:  # q and o are often k and v's shape: measured once
            now[key] = 2 * m * k * n / _seconds(m, k, n, DTYPES[precision])
        best = rates.get(key)
        if isinstance(best, (int, float)) and best > now[key]:
            cached += 1
        else:
            best = rates[key] = now[key]
        flops += times * 2 * k * n
        seconds += times * 2 * k * n / best
        shown.append({"rows": m, "k": k, "n": n, "times": times, "flops_per_s": round(best), "now": round(now[key])})
    if cache:
        try:
            atomic_write_json(file, {"version": CACHE_VERSION, "rates": {**_read_cache(file), **rates}})
        except OSError:  # a read-only home: the plan stands, the next one measures again
            pass
    return {"flops_per_s": flops / seconds, "products": shown, "rows": rows, "threads": threads,
            "precision": precision, "cached": cached == len(shown), "cpu": cpu_name(), "file": str(file)}
