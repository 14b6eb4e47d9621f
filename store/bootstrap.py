"""The person-level bootstrap behind every interval factrecall reports (probes, interventions).

A run scores each of its test people 0 or 1 under each condition (a probe, a patch) at each layer.
A replicate draws the runs (seeds) with replacement where there are several, and within each run its
people with replacement, once for all of that run's conditions and layers, so that differences
between conditions of the same people (Δrep, a patch's gain) keep their pairing. A statistic is
averaged over the layers asked for (as the claims average the top layers), then over the runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def replicates(
    runs: Sequence[dict[str, np.ndarray]],
    derive: Callable[[dict[str, np.ndarray]], None] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """runs: per run, condition -> outcomes (layers, people) of 0 and 1 (all NaN: not measured).
    Returns condition -> (resamples,) percentages; `derive(stats)` may add columns computed from a
    run's (layers, resamples) percentages before they are averaged over layers (|a - b|, a - b)."""
    if not runs:
        raise ValueError("no runs to resample")
    rng = np.random.default_rng(seed)
    per_run = []
    for outcomes in runs:
        n = next(iter(outcomes.values())).shape[1]
        draw = rng.integers(0, n, size=(resamples, n))
        stats = {k: 100.0 * np.asarray(v, dtype=np.float64)[:, draw].mean(-1) for k, v in outcomes.items()}
        if derive is not None:
            derive(stats)
        per_run.append({k: v.mean(0) for k, v in stats.items()})
    if len(per_run) == 1:
        return per_run[0]
    pick = rng.integers(0, len(per_run), size=(resamples, len(per_run)))  # the seeds, with replacement
    return {k: np.stack([r[k] for r in per_run])[pick, np.arange(resamples)[:, None]].mean(1) for k in per_run[0]}


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN, NaN where nothing was measured)."""
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))
