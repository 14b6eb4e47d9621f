"""The one timing helper of the benchmark scripts (run as `python benchmarks/bench_*.py`, so this
folder is on sys.path)."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int = 3):
    """(median seconds, last result) of `repeats` calls of `fn`, after one warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out
