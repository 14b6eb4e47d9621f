"""Interventions on resid_mid, as the store keeps them: their settings, their numbers, their cache.

The probes (store.probes) say where an attribute is *readable*; an intervention asks whether the
model *uses* it. `factrecall-jobs patch` (jobs.run.patch) runs a model's QA prompt, replaces resid_mid
at one layer at the last prompt token with a vector read from this store, finishes the forward pass
and greedily decodes the answer. Per layer and model it scores, over the patched people (default the
QA out-of-distribution ones), the exact match of:

    qa            the QA prompt as it is (the recall the patches are measured against)
    bio_long_qa   the same person's hBIO_long patched into the QA pass (the representation-consistency test)
    bio_short_qa  the same person's hBIO_short patched into the QA pass
    identity_qa   the person's own hQA, from the store, patched into the QA pass (a control: changes nothing)
    donor_own     another person's hBIO_long patched in: answers still the person's own
    donor_rate    ... answers that become the donor's (the transplant rate)
    random_qa     a random direction with hBIO_long's norm patched in (a control)
    bio           the BIO_long prompt as it is
    qa_bio_long   the person's hQA patched into the BIO_long pass (the reverse direction)
    erase_qa      the QA pass with the attribute's linear direction erased at the layer (LEACE fitted on
                  the QA-in people's hQA)
    erase_bio     the BIO_long pass, erased likewise (LEACE fitted on their hBIO_long)
    erase_random_qa  the QA pass with as many random directions removed as LEACE removed (a control:
                  LEACE removes up to one dimension per class, and with many classes that is much)

Results live in the store's group `interventions/<key>`, one JSON document each (the group's
attributes): the settings, the version of the computation (`PATCH_VERSION`), and per layer the
percentages and each patched person's outcome (for intervals over people). The key
(`store.cache.result_key`) covers that version, every setting, the model and the store's fingerprint
(which covers the checkpoints' weights), not the source code: a result kept under another key
(another version, or the source-code hash keys of earlier versions) is never served, but computed
once more when asked for. `results(s)` lists the current ones without computing anything, which is
how the TUI shows them. A result carries a digest of what is stored and is served only when the
digest and every number check out (`_valid`); one edited, cut or written before digests existed is
treated as absent: computed again and rewritten.
"""

from __future__ import annotations

import numpy as np
import zarr

from store import bootstrap
from store.cache import result_key
from store.errors import StoreError
from store.reader import ActivationStore
from store.settings import PatchSettings
from store.validate import digest, digest_ok, rate

GROUP = "interventions"
COLUMNS = (
    "qa",
    "bio_long_qa",
    "bio_short_qa",
    "identity_qa",
    "donor_own",
    "donor_rate",
    "random_qa",
    "bio",
    "qa_bio_long",
    "erase_qa",
    "erase_bio",
    "erase_random_qa",
)
LABELS = {
    "qa": "QA",
    "bio_long_qa": "hBIO_long→QA",
    "bio_short_qa": "hBIO_short→QA",
    "identity_qa": "hQA→QA",
    "donor_own": "donor: own",
    "donor_rate": "donor: donor's",
    "random_qa": "random→QA",
    "bio": "BIO",
    "qa_bio_long": "hQA→BIO",
    "erase_qa": "erased QA",
    "erase_bio": "erased BIO",
    "erase_random_qa": "random erased QA",
}
# The columns that are the same at every layer (the unpatched passes).
UNPATCHED = ("qa", "bio")


# The version of the computation a patching result's numbers come from: jobs/run/patch.py (the hooks,
# the patched and erased vectors, the donors, the scoring) and what it runs through (the model's
# forward pass as jobs.run.sites reads it, jobs.run.evaluate's greedy decoding, the store's vectors).
# Part of every cached result's key (`cache_key`); declared here, not in jobs, because the store tells
# a current result from a stale one without loading any model code (`results`, which the app reads).
# Bump it when a change alters the numbers; tests/test_golden_results.py pins a tiny patch's rows and
# this key, so a change of the numbers without a bump fails there.
PATCH_VERSION = 1


def cache_key(s: ActivationStore, model: str, settings: PatchSettings) -> str:
    """The key of `model`'s patching result on `s` with `settings` (`store.cache.result_key`): the
    version, every setting, the store's fingerprint and the model; not the source code."""
    return result_key("patch", PATCH_VERSION, settings, s.meta.get("fingerprint"), model=model)


def _current(s: ActivationStore, key: str, result: dict) -> bool:
    """Whether `result`, stored under `key`, is one this code would serve: its key is the one `cache_key`
    gives its own model and settings (not one of another version, nor of the source-code hash keys
    results were stored under before versions)."""
    settings = dict(result["settings"])
    if isinstance(settings.get("layers"), list):
        settings["layers"] = tuple(settings["layers"])
    try:
        return cache_key(s, result["model"], PatchSettings(**settings)) == key
    except (TypeError, ValueError, StoreError):  # settings this code does not have, or out of its bounds
        return False


def _valid(attrs: dict, key: str | None = None, layers: int | None = None) -> bool:
    """Whether a cached result is one `patch_model` wrote: its digest matches what is stored, and
    every percentage is the share of its own people's outcomes (so finite, within 0..100 and inside
    its interval), NaN exactly where a column was not computed; the counts agree with the people."""
    rows, outcomes, people = attrs.get("rows"), attrs.get("outcomes"), attrs.get("people")
    if not (
        digest_ok(attrs)
        and (key is None or attrs.get("key") == key)
        and isinstance(attrs.get("settings"), dict)
        and isinstance(attrs.get("model"), str)
        and isinstance(attrs.get("created", ""), str)
        and isinstance(rows, list)
        and rows
        and isinstance(outcomes, list)
        and len(outcomes) == len(rows)
        and isinstance(people, list)
        and len(people) >= 2
        and all(type(p) is int for p in people)
    ):
        return False
    n = len(people)
    if not all(
        isinstance(r, dict) and type(r.get("layer")) is int and 0 <= r["layer"] < (layers or r["layer"] + 1)
        for r in rows
    ) or len({r["layer"] for r in rows}) != len(rows):
        return False  # a row per layer of the store, each once
    for row, outcome in zip(rows, outcomes):
        if not (
            isinstance(outcome, dict)
            and set(outcome) <= set(COLUMNS)
            and row.get("n_people") == n
            and type(row.get("n_people")) is int
            and type(row.get("n_donor")) is int
            and 0 <= row["n_donor"] <= n
            and type(row.get("erase_rank")) is int
            and row["erase_rank"] >= 0
        ):
            return False
        for c in COLUMNS:
            value = row.get(c)
            if c in outcome and not rate(value, outcome[c], n, ndigits=2):
                return False
            if c not in outcome and not (c not in UNPATCHED and isinstance(value, float) and np.isnan(value)):
                return False
    return True


def cached(s: ActivationStore, key: str) -> dict | None:
    """The result stored under `key` (settings, model, version, seconds, rows, outcomes), or None when
    absent, damaged or not as written (then computed again and rewritten)."""
    try:
        group = zarr.open_group(s.url, mode="r", path=f"{GROUP}/{key}", zarr_format=3, use_consolidated=False)
        attrs = group.attrs.asdict()
    except Exception:  # noqa: BLE001 - absent, or damaged by a kill
        return None
    return attrs if _valid(attrs, key, s.layers) else None


def store_cached(s: ActivationStore, key: str, result: dict) -> bool:
    """Keep `result` under `key` (written whole, as one JSON document, with the digest `cached`
    checks); False where the store cannot be written (the result stands, it is just not remembered)."""
    entry = {**result, "key": key}
    try:
        group = zarr.open_group(s.url, mode="w", path=f"{GROUP}/{key}", zarr_format=3, use_consolidated=False)
        group.attrs.put({**entry, "digest": digest(entry)})
    except Exception:  # noqa: BLE001 - read-only or damaged
        return False
    return True


def results(s: ActivationStore, attribute: str | None = None) -> list[dict]:
    """Every current patching result the store holds (optionally for one attribute), newest first: what
    has been computed, looked at without computing anything. One kept under another key than this code
    gives it (another `PATCH_VERSION`, or from before versions) is left out, as `patch` would not serve it."""
    try:
        root = zarr.open_group(s.url, mode="r", path=GROUP, zarr_format=3, use_consolidated=False)
        keys = sorted(root.group_keys())
    except Exception:  # noqa: BLE001 - none yet
        return []
    found = []
    for key in keys:
        hit = cached(s, key)
        if (
            hit is not None
            and _current(s, key, hit)
            and (attribute is None or hit["settings"].get("attribute") == attribute)
        ):
            found.append(hit)
    return sorted(found, key=lambda r: r.get("created", ""), reverse=True)


def frame(found: list[tuple[str, dict]]):
    """A tidy pandas DataFrame of results, given as (run, result) pairs: one row per (run, model,
    layer), every column, and the people counted."""
    import pandas as pd

    rows = [{"run": run, "model": r["model"], **row} for run, r in found for row in r["rows"]]
    if not rows:
        raise StoreError("no patching results to show")
    return pd.DataFrame(rows)[["run", "model", "layer", *COLUMNS, "n_people", "n_donor", "erase_rank"]]


def summary(df, found: list[dict] | None = None):
    """Mean and sample standard deviation over runs (seeds) per (model, layer); given the results the
    frame came from, also each column's 95% bootstrap interval over people (and seeds) as _lo and _hi."""
    grouped = df.groupby(["model", "layer"], sort=False)[list(COLUMNS)]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).reset_index()
    out["runs"] = df.groupby(["model", "layer"], sort=False).size().to_numpy()
    if found is not None:
        bounds = [intervals(found, model, [int(layer)]) for model, layer in zip(out["model"], out["layer"])]
        for column in COLUMNS:
            out[f"{column}_lo"] = [b[column][0] for b in bounds]
            out[f"{column}_hi"] = [b[column][1] for b in bounds]
    return out


def latest(s: ActivationStore, attribute: str, model: str, split: str = "qa_out") -> dict | None:
    """The newest result the store holds for `model` and `attribute` over every layer and every one of
    the split's people (what `patch` and `reproduce` compute by default), or None."""
    return next(
        (
            r
            for r in results(s, attribute)
            if r["model"] == model
            and r["settings"].get("split") == split
            and r["settings"].get("layers") is None
            and r["settings"].get("people") is None
        ),
        None,
    )


# Differences of the same people under two conditions: what a patch gains, what an erasure takes.
DIFFERENCES = {
    "gain_bio_long_qa": ("bio_long_qa", "qa"),
    "gain_bio_short_qa": ("bio_short_qa", "qa"),
    "gain_qa_bio_long": ("qa_bio_long", "bio"),
    "drop_erase_qa": ("qa", "erase_qa"),
    "drop_erase_random_qa": ("qa", "erase_random_qa"),
    "drop_erase_bio": ("bio", "erase_bio"),
}


def intervals(
    found: list[dict],
    model: str,
    layers: list[int],
    *,
    level: float = bootstrap.LEVEL,
    resamples: int = bootstrap.RESAMPLES,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% person-level bootstrap intervals (over seeds too: one result per run in `found`) of every
    column and of `DIFFERENCES`, for `model`, averaged over `layers`."""
    runs = []
    for result in (r for r in found if r["model"] == model):
        at = {row["layer"]: i for i, row in enumerate(result["rows"])}
        missing = [k for k in layers if k not in at]
        if missing:
            raise StoreError(f"the patching result of {model} has no layer {missing[0]}")
        n = len(result["people"])
        runs.append(
            {
                c: np.array([result["outcomes"][at[k]].get(c, [np.nan] * n) for k in layers], dtype=np.float64)
                for c in COLUMNS
            }
        )
    if not runs:
        raise StoreError(f"no patching results of model {model!r}")

    def derive(stats: dict[str, np.ndarray]) -> None:
        for name, (a, b) in DIFFERENCES.items():
            stats[name] = stats[a] - stats[b]

    values = bootstrap.replicates(runs, derive, resamples=resamples, seed=seed)
    return {k: bootstrap.interval(v, level) for k, v in values.items()}
