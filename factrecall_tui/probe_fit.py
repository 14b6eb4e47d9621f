"""What the Probes pane computes, without Textual: the request (runs and the whole `ProbeSettings` of
store/settings.py), the attributes and sites a store holds (read without zarr), and the fit itself
(`compute`): the table `factrecall-jobs probe` prints (`store.probes.sweeps`, the same assembly) and
its summary over runs.

`store.probes` (torch) is imported by `compute`, in the pane's worker thread, never at import time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.errors import RunFolderError
from jobs.run.files import read_json
from jobs.run.spec import is_name
from jobs.words import ATTRIBUTES
from store.names import ATTRS_KEY, DEFAULT_SITE, STORE_NAME, parse_site
from store.settings import ProbeSettings

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ProbeRequest:
    """What a fit computes: the runs (seeds), their folders, and the settings, as a whole."""

    runs: tuple[str, ...]
    paths: tuple[str, ...]
    settings: ProbeSettings = ProbeSettings()

    def describe(self) -> str:
        """`job, bio_long, qa_in → qa_out, RUN`, and any other setting that is not its default."""
        s = self.settings
        runs = self.runs[0] if len(self.runs) == 1 else f"{len(self.runs)} runs"
        main = ("attribute", "bio", "train_split", "test_split")
        other = [
            f"{f.name.replace('_', ' ')} {_word(getattr(s, f.name))}"
            for f in dataclasses.fields(s)
            if f.name not in main and getattr(s, f.name) != f.default
        ]
        return ", ".join([s.attribute, s.bio, f"{s.train_split} → {s.test_split}", *other, runs])


def _word(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


@dataclass
class ProbeResult:
    models: list[str]
    df: pd.DataFrame  # the per-run table (store.probe_tables.frame)
    agg: pd.DataFrame  # its summary over runs (store.probe_tables.summary)
    seconds: float
    cached: int  # (run, model) sweeps the stores' caches had, of `units`
    units: int


class Cancelled(Exception):
    """`compute` stopped because `stop()` said so."""


def store_names(run_path: Path) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The store's attributes and sites (`hook@position`), from its zarr.json (no zarr import; through
    jobs.run.files, so a FIFO there is refused, never waited on); None where it cannot be read. Only
    names factrecall could have written: they become the Probes pane's options and an export's file
    name. A store made before sites holds resid_mid@last alone (as `store.open` reads it)."""
    try:
        meta = read_json(run_path / STORE_NAME / "zarr.json", "")["attributes"][ATTRS_KEY]
        attributes = tuple(a for a in meta["attributes"] if is_name(a))
        sites = tuple(s for s in meta.get("sites", [DEFAULT_SITE]) if _is_site(s))
    except (OSError, RunFolderError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return attributes, sites


def _is_site(site: object) -> bool:
    """A site's full name, as a dump writes it (`mlp_out@subject_last`, never `mlp_out`)."""
    try:
        return isinstance(site, str) and parse_site(site) == site
    except ValueError:
        return False


class StoreNames:
    """The attributes and the sites the chosen stores all hold, each store read once a version (its
    zarr.json's time)."""

    def __init__(self) -> None:
        self._read: dict[tuple[str, int], tuple[tuple[str, ...], tuple[str, ...]] | None] = {}

    def _names(self, paths: Sequence[Path], which: int) -> list[tuple[str, ...]]:
        found: list[tuple[str, ...]] = []
        for path in paths:
            try:
                stamp = (path / STORE_NAME / "zarr.json").stat().st_mtime_ns
            except OSError:
                stamp = 0
            key = (str(path), stamp)
            if key not in self._read:
                self._read[key] = store_names(path)
            if self._read[key] and self._read[key][which]:
                found.append(self._read[key][which])
        return found

    @staticmethod
    def _common(found: list[tuple[str, ...]], otherwise: tuple[str, ...]) -> tuple[str, ...]:
        """What every one of `found` has, in the first one's order (the first's where they share
        nothing: the fit then says which store lacks it); `otherwise` where none could be read."""
        if not found:
            return otherwise
        common = [a for a in found[0] if all(a in f for f in found[1:])]
        return tuple(common) or found[0]

    def common(self, paths: Sequence[Path]) -> tuple[str, ...]:
        """The attributes every store of `paths` has, in the first one's (BIO) order; the vocabulary's
        where none can be read."""
        return self._common(self._names(paths, 0), ATTRIBUTES)

    def sites(self, paths: Sequence[Path]) -> tuple[str, ...]:
        """The sites every store of `paths` holds, in the first one's (its dump's) order; resid_mid@last
        where none can be read."""
        return self._common(self._names(paths, 1), (DEFAULT_SITE,))


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
    from store import probe_tables, probes

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
    settings = request.settings
    models = probe_tables.baseline(stores, probes.check_request(stores, None, settings))  # as `probe` shows them
    found = list(probes.sweeps(stores, models, settings, cached_only=not fit, progress=step))
    if len(found) < len(stores) * len(models):  # cached_only: the cache lacks one
        return None
    check()
    df = probe_tables.frame(found)
    agg = probe_tables.summary(df, found)
    check()
    return ProbeResult(models, df, agg, time.perf_counter() - t0, sum(one.cached for one in found), len(found))
