"""Probe tables: the rows of probe sweeps (store.probes) as the CLI, the app, the report and the figures
show them. A table is made of `Sweep`s, one per (run, model); from them

- `frame`: the tidy pandas DataFrame, one row per (run, model, layer), every probe column;
- `summary`: its mean and sample standard deviation over runs (seeds), and each interval column's 95%
  person-level bootstrap interval (`intervals`, over `replicates`) from the sweeps' per-person outcomes;
- `table_columns`, `row_cells`, `format_cell`, `counts`: the columns a table shows and its cells as text;
- `baseline`: the models a table shows (the untrained baseline row last).

Nothing here fits a probe or reads a vector (no torch): what is computed, and cached, is store.probes'.
A change here changes no cached sweep: cached rows are keyed by `store.probes.PROBE_VERSION`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from store import bootstrap
from store.bootstrap import LEVEL, RESAMPLES
from store.errors import StoreError
from store.names import (
    PROBE_ACCURACIES,
    PROBE_COLUMNS,
    PROBE_CONTROLS,
    PROBE_INTERVALS,
    PROBE_SELECTIVITY,
)

if TYPE_CHECKING:  # a table reads no store: the type only
    from store.reader import ActivationStore


@dataclass(frozen=True)
class Sweep:
    """One (store, model) sweep of a table: its rows (one per layer), and whether the cache had them."""

    run: str
    model: str
    rows: list[dict]
    cached: bool


def frame(found: Iterable[Sweep]):
    """The tidy pandas DataFrame of sweeps: one row per (run, model, layer), every probe column."""
    import pandas as pd  # with the table, as `labels` does: a sweep alone needs no pandas

    frames = [pd.DataFrame(one.rows).assign(run=one.run, model=one.model) for one in found]
    return pd.concat(frames, ignore_index=True)[
        ["run", "model", "layer", *PROBE_COLUMNS, *PROBE_CONTROLS, *PROBE_SELECTIVITY, "n_train", "n_test", "n_classes"]
    ]


def counts(df, column: str) -> str:
    """A count of a probe table over its runs, as one text: `6`, or `5–6` where runs differ (each run's
    held-out people see their own attribute values)."""
    low, high = int(df[column].min()), int(df[column].max())
    return f"{low}" if low == high else f"{low}–{high}"


def format_cell(row, key: str, several: bool) -> str:
    """One number of a summary row as tables show it: 1 decimal (3 for cosine and CKA), ±std over
    runs when there are several."""
    digits = 3 if key in ("cosine", "cka") else 1
    text = f"{row[key]:.{digits}f}"
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        return f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"  # the bootstrap interval, over seeds too
    if several:
        text += f"±{row[key + '_std']:.{digits}f}"
    return text


def table_columns(controls: bool = True) -> list[str]:
    """The columns a probe table shows (the CLI's and the app's alike): the four accuracies, Δrep,
    Δmech, cosine and CKA, and with the control task each accuracy's selectivity."""
    return [*PROBE_COLUMNS, *(PROBE_SELECTIVITY if controls else ())]


def row_cells(row, several: bool, controls: bool = True) -> list[str]:
    """One summary row's cells as every probe table shows them (`format_cell` per column)."""
    return [format_cell(row, key, several) for key in table_columns(controls)]


def baseline(stores: Sequence[ActivationStore], models: Sequence[str]) -> list[str]:
    """`models` and, where every store has it dumped and it is not among them, the untrained model: the
    baseline row of every probe table (what a probe reads from a prompt's tokens before any fact was learned)."""
    extra = "untrained" not in models and all("untrained" in s.dumped_models() for s in stores)
    return [*models, *(["untrained"] if extra else [])]


def summary(df, found: Sequence[Sweep] | None = None):
    """Mean and sample standard deviation over runs (seeds) per (model, layer); given the sweeps the
    table came from, also each interval column's 95% bootstrap interval (`intervals`) as _lo and _hi."""
    columns = [
        c for c in (*PROBE_COLUMNS, *PROBE_CONTROLS, *PROBE_SELECTIVITY) if c in df.columns
    ]  # a report's rows may lack controls
    grouped = df.groupby(["model", "layer"], sort=False)[columns]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).reset_index()  # sample std; NaN for one run
    out["runs"] = df.groupby(["model", "layer"], sort=False).size().to_numpy()
    if found is not None:
        bounds = [intervals(found, model, [int(layer)]) for model, layer in zip(out["model"], out["layer"])]
        for column in PROBE_INTERVALS:  # noqa: B007
            out[f"{column}_lo"] = [b[column][0] for b in bounds]
            out[f"{column}_hi"] = [b[column][1] for b in bounds]
    return out


def replicates(
    found: Sequence[Sweep], model: str, layers: Sequence[int], *, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, np.ndarray]:
    """Bootstrap replicates (`store.bootstrap`) of every interval column for `model`, averaged over
    `layers` and over runs. Returns column -> (resamples,) values."""
    runs = []
    for one in (f for f in found if f.model == model):
        by_layer = {r["layer"]: r for r in one.rows}
        missing = [k for k in layers if k not in by_layer]
        if missing:
            raise StoreError(f"{one.run} {model} has no probe row for layer {missing[0]}")
        n = by_layer[layers[0]]["n_test"]
        runs.append(
            {
                c: np.array([by_layer[k]["correct"].get(c, [np.nan] * n) for k in layers], dtype=np.float64)
                for c in (*PROBE_ACCURACIES, *PROBE_CONTROLS)
            }
        )
    if not runs:
        raise StoreError(f"no probe sweeps of model {model!r} to bootstrap")

    def derive(stats: dict[str, np.ndarray]) -> None:
        stats["delta_rep"] = np.abs(stats["acc_qa_wqa"] - stats["acc_bio_wqa"])
        stats["delta_mech"] = np.abs(stats["acc_qa_wbio"] - stats["acc_qa_wqa"])
        for sel, acc, ctl in zip(PROBE_SELECTIVITY, PROBE_ACCURACIES, PROBE_CONTROLS):
            stats[sel] = stats[acc] - stats[ctl]

    return bootstrap.replicates(runs, derive, resamples=resamples, seed=seed)


def intervals(
    found: Sequence[Sweep],
    model: str,
    layers: Sequence[int],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """The `level` percentile interval of every interval column (see `replicates`)."""
    return {
        k: bootstrap.interval(v, level)
        for k, v in replicates(found, model, layers, resamples=resamples, seed=seed).items()
    }
