"""The report's "Where the fact is": at which site is the attribute readable, and does the subject's
vector carry it into the QA pass? (docs/sites.md)

Per run, Stage's and Mix's vectors at `WHERE_SITES` (three hooks x the subject's last token and the last
token) are dumped in one pass per prompt into RUN/sites.zarr (`SITES_NAME`), each site is probed as the
paper probes resid_mid at the last token (BIO_long, QA-in people train, QA-out people test; `WHERE_ATTRIBUTE`),
and one causal test is run: `WHERE_PATCH_SITE`'s vector from the BIO_long pass is put into the QA pass
at the same site, for the QA-out people (store.interventions' `bio_long_qa` column), at every layer.
Everything is cached in the sites store, as the main store caches its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

import store
from jobs.run.dump import dump
from jobs.run.patch import load_run_inputs, patch
from jobs.study.plan import PAPER_MODELS
from store.names import REPORT_PATCH_SITE, REPORT_SITES, SITES_NAME
from store.probes import ProbeSettings, cached, sweep
from store.settings import DumpOptions, PatchSettings

WHERE_ATTRIBUTE = "job"
WHERE_PATCH_SITE = REPORT_PATCH_SITE
WHERE_COLUMNS = ("acc_qa_wqa", "acc_bio_wbio")  # Acc(hQA·WQA), Acc(hBIO·WBIO)
PATCH_COLUMNS = ("qa", "bio_long_qa", "identity_qa", "random_qa", "donor_rate")


def sites_url(path: Path) -> str:
    return str(path / SITES_NAME)


def patch_settings() -> PatchSettings:
    return PatchSettings(attribute=WHERE_ATTRIBUTE, site=WHERE_PATCH_SITE, erase=False)


def dumped_sites(sites: tuple[str, ...] = REPORT_SITES) -> tuple[str, ...]:
    """The sites the sites store holds: those asked for, and the causal test's."""
    return sites if WHERE_PATCH_SITE in sites else (*sites, WHERE_PATCH_SITE)


def where_runs(
    paths: list[Path], progress: Callable[[int, int, str], None] | None = None, sites: tuple[str, ...] = REPORT_SITES
) -> None:
    """For every run: its sites store (dumped where not complete), every site's probe sweep and the
    causal test (each from the store's cache where it is there)."""
    steps, done = len(paths) * (2 + len(PAPER_MODELS) * len(sites)), 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps, what)

    for path in paths:
        url = sites_url(path)
        run, tok, prompts, targets = load_run_inputs(path)
        dump(run, tok, prompts, targets, DumpOptions(models=PAPER_MODELS, url=url, sites=dumped_sites(sites)))
        step(f"{path.name}: sites dumped")
        s = store.open(url)
        for model in PAPER_MODELS:
            for site in sites:
                settings = ProbeSettings(attribute=WHERE_ATTRIBUTE, site=site, controls=False)
                if cached(s, model, settings) is None:
                    sweep(s, model, settings)
                step(f"{path.name} {model} {site}")
        patch(path, s, list(PAPER_MODELS), patch_settings())
        step(f"{path.name}: {WHERE_PATCH_SITE} patched")


def collect_where(paths: list[Path], sites: tuple[str, ...] = REPORT_SITES) -> dict | None:
    """The section's numbers, mean and std over seeds (runs), from the sites stores' caches; None where
    a run has no complete sites store (a study from before sites: `reproduce` again adds it)."""

    urls = [sites_url(p) for p in paths]
    if not all(Path(u).exists() for u in urls):
        return None
    stores = [store.open(u) for u in urls]
    if not all(all(s.complete(m) for m in PAPER_MODELS) and set(sites) <= set(s.sites) for s in stores):
        return None
    probes: dict = {}
    for model in PAPER_MODELS:
        for site in sites:
            settings = ProbeSettings(attribute=WHERE_ATTRIBUTE, site=site, controls=False)
            found = [sweep(s, model, settings) for s in stores]
            probes.setdefault(model, {})[site] = [
                {
                    "layer": rows[0]["layer"],
                    **{c: _stats([r[i][c] for r in found]) for c in WHERE_COLUMNS},
                }
                for i, rows in enumerate(zip(*found))
            ]
    results = [r for p, s in zip(paths, stores) for r, _ in patch(p, s, list(PAPER_MODELS), patch_settings())]
    patched: dict = {}
    for model in PAPER_MODELS:
        mine = [r for r in results if r["model"] == model]
        patched[model] = [
            {"layer": row["layer"], **{c: _stats([r["rows"][i][c] for r in mine]) for c in PATCH_COLUMNS}}
            for i, row in enumerate(mine[0]["rows"])
        ]
    return {
        "attribute": WHERE_ATTRIBUTE,
        "sites": list(sites),
        "seeds": len(paths),
        "probes": probes,
        "patch_site": WHERE_PATCH_SITE,
        "patch_split": patch_settings().split,
        "patch_people": len(results[0]["people"]),
        "patch": patched,
    }


def _stats(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": [float(v) for v in values],
    }
