"""What the Probes pane computes, without Textual: the request (runs and settings), the attributes a
store holds (read without zarr), and the fit itself (`compute`): the table `factrecall-jobs probe`
prints (`store.probes.sweeps`, the same assembly) and its summary over runs.

`store.probes` (torch) is imported by `compute`, in the pane's worker thread, never at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.errors import RunFolderError
from jobs.run.files import read_json
from jobs.run.spec import is_name
from store.names import ATTRS_KEY, STORE_NAME

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ProbeRequest:
    """What a fit computes: the runs (seeds) and every setting besides the CLI's defaults."""

    runs: tuple[str, ...]
    paths: tuple[str, ...]
    attribute: str
    bio: str
    train_split: str = "qa_in"
    test_split: str = "qa_out"

    def describe(self) -> str:
        runs = self.runs[0] if len(self.runs) == 1 else f"{len(self.runs)} runs"
        return f"{self.attribute}, {self.bio}, {self.train_split} → {self.test_split}, {runs}"


@dataclass
class ProbeResult:
    models: list[str]
    df: pd.DataFrame  # the per-run table (store.probes.frame)
    agg: pd.DataFrame  # its summary over runs (store.probes.summary)
    seconds: float
    cached: int  # (run, model) sweeps the stores' caches had, of `units`
    units: int


class Cancelled(Exception):
    """`compute` stopped because `stop()` said so."""


def store_attributes(run_path: Path) -> tuple[str, ...] | None:
    """The store's attributes, from its zarr.json (no zarr import; through jobs.run.files, so a FIFO
    there is refused, never waited on); None where it cannot be read. Only names factrecall could have
    written: they become the Probes pane's options and an export's file name."""
    try:
        meta = read_json(run_path / STORE_NAME / "zarr.json", "")["attributes"][ATTRS_KEY]
        attributes = tuple(a for a in meta["attributes"] if is_name(a))
    except (OSError, RunFolderError, KeyError, TypeError, IndexError):
        return None
    return attributes or None


def compute(
    request: ProbeRequest,
    *,
    fit: bool,
    stop: Callable[[], bool],
    progress: Callable[[int, int, str], None] | None = None,
) -> ProbeResult | None:
    """The probe table and summary for `request`. Blocking: call it in a worker thread. With
    fit=False, only what the stores' caches hold: None where they lack a sweep. `progress(done,
    total, what)` after each layer fitted. Raises `Cancelled` once `stop()` is true (checked between
    stores and layers), and `StoreError` for a request the stores cannot answer."""
    import store
    from store import probes

    def check() -> None:
        if stop():
            raise Cancelled

    def step(done: int, total: int, what: str) -> None:
        check()
        if progress is not None:
            progress(done, total, what)

    t0 = time.perf_counter()
    stores = []
    for path in request.paths:
        check()
        stores.append(store.open(path))
    settings = probes.ProbeSettings(
        attribute=request.attribute, bio=request.bio, train_split=request.train_split, test_split=request.test_split
    )
    models = probes.baseline(stores, probes.check_request(stores, None, settings))  # as `probe` shows them
    found = list(probes.sweeps(stores, models, settings, cached_only=not fit, progress=step))
    if len(found) < len(stores) * len(models):  # cached_only: the cache lacks one
        return None
    check()
    df = probes.frame(found)
    agg = probes.summary(df, found)
    check()
    return ProbeResult(models, df, agg, time.perf_counter() - t0, sum(one.cached for one in found), len(found))
