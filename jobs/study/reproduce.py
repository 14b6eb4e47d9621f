"""`factrecall-jobs reproduce`: the paper's whole study, end to end, resumable.

For each seed, one run trains BIO-only, two-stage (Stage: the QA phase on top of the BIO checkpoint)
and mixed (Mix) models, with `train.snapshots` checkpoints kept along every phase; evaluates each
model and snapshot (BIO, QA in, QA out, per attribute); dumps the activation store and the
trajectory store (the snapshots); then fits the probe sweeps: every attribute with BIO_long and
BIO_short for Stage and Mix (the paper's Figures 3 and 4), and every attribute with BIO_long for
every snapshot and its endpoints (how the representation evolves). The report (`report.py`) is
written last, into the study folder WORKSPACE/reproduce/NAME/. The design is `plan.py`'s.

Every step is one of the run's own steps (done markers, checkpoints) or a probe result cached in a
store, so a killed study started again recomputes nothing it finished.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import store
from jobs.errors import FactrecallError
from jobs.launch.queue import queued_runs
from jobs.run.files import atomic_write_json, hold_lock, take_lock
from jobs.run.folder import watch_stop
from jobs.run.spec import ExperimentSpec
from jobs.run.workspace import study_path
from jobs.study.plan import PAPER_MODELS, PATCH_ATTRIBUTE, Study, probe_jobs
from jobs.study.report import TIMING_FILE, read_timing, write_report
from jobs.study.where import where_runs
from store.probes import ProbeSettings, cached, sweep

LOCK_FILE = "study.lock"
ProbeProgress = Callable[[int, int, str], None]  # (sweeps done, sweeps in all, the sweep in words)


def check_idle(study: Study) -> None:
    """Refuse to train runs of the study that are queued or running anywhere (here, or on Slurm)."""
    busy = queued_runs(study.workspace)
    waiting = [p.name for p in study.paths if p.name in busy]
    if waiting:
        raise FactrecallError(
            f"{', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} queued or running "
            "(`factrecall-jobs status`); run reproduce again once they are done"
        )


def run_study(
    study: Study,
    run_one: Callable[[ExperimentSpec, Path], None],
    *,
    probe_progress: ProbeProgress | None = None,
    patch_progress: ProbeProgress | None = None,
    sites_progress: ProbeProgress | None = None,
    argv: list[str] | None = None,
) -> tuple[dict, int]:
    """Run every step of the study that is not done: each run through `run_one(spec, folder)` (the
    CLI's, with its progress bars), every probe sweep, the interventions, and the report. Returns report.json's content
    and how many sweeps were fitted now (the rest came from the stores' caches)."""
    check_idle(study)
    with study_lock(study):
        return _run_study(
            study,
            run_one,
            probe_progress=probe_progress,
            patch_progress=patch_progress,
            sites_progress=sites_progress,
            argv=argv,
        )


@contextlib.contextmanager
def study_lock(study: Study) -> Iterator[None]:
    """The study folder WORKSPACE/reproduce/NAME (made, never through a link) held by this process for
    the whole study (`study.lock`, as a run holds run.lock): a second `reproduce` of the same study is
    refused in one line naming the first's pid, instead of fitting the same probes beside it."""
    folder = study_path(study.workspace, study.name, make=True)
    fd = take_lock(folder / LOCK_FILE, f"study {study.name}")
    try:
        hold_lock(fd)
        with watch_stop(folder):  # `cancel study:NAME` stops the run being trained, whenever it arrives
            yield
    finally:
        os.close(fd)


def _run_study(
    study: Study,
    run_one: Callable[[ExperimentSpec, Path], None],
    *,
    probe_progress: ProbeProgress | None,
    patch_progress: ProbeProgress | None,
    sites_progress: ProbeProgress | None = None,
    argv: list[str] | None = None,
) -> tuple[dict, int]:
    atomic_write_json(
        study.folder / "plan.json",
        {
            "name": study.name,
            "preset": study.preset,
            "seeds": [spec.seed for spec, _ in study.runs],
            "snapshots": study.snapshots,
            "sites": list(study.sites),
            "runs": [str(p.relative_to(study.workspace)) for p in study.paths],
            "argv": argv or [],
        },
    )
    runs = len(study.runs)
    for i, (spec, path) in enumerate(study.runs):
        _progress(study, step="runs", runs_done=i, runs_total=runs, current=path.name)
        with timed(study.folder, f"run {path.name}"):
            run_one(spec, path)

    def probes(done: int, total: int, what: str) -> None:
        _progress(study, step="probes", runs_done=runs, runs_total=runs, probes_done=done, probes_total=total)
        if probe_progress is not None:
            probe_progress(done, total, what)

    _progress(study, step="probes", runs_done=runs, runs_total=runs)
    with timed(study.folder, "probes"):
        fitted = fit_probes(study.paths, probes)
    _progress(study, step="interventions", runs_done=runs, runs_total=runs)
    with timed(study.folder, "interventions"):

        def patched(done: int, total: int, what: str) -> None:
            _progress(study, step="interventions", runs_done=runs, runs_total=runs, patched=done, patch_total=total)
            if patch_progress is not None:
                patch_progress(done, total, what)

        patch_runs(study.paths, patched)
    _progress(study, step="sites", runs_done=runs, runs_total=runs)
    with timed(study.folder, "sites"):

        def sited(done: int, total: int, what: str) -> None:
            _progress(study, step="sites", runs_done=runs, runs_total=runs, sites_done=done, sites_total=total)
            if sites_progress is not None:
                sites_progress(done, total, what)

        where_runs(study.paths, sited, study.sites)
    _progress(study, step="report", runs_done=runs, runs_total=runs)
    with timed(study.folder, "report"):
        report = write_report(study)
    _progress(study, step="done", runs_done=runs, runs_total=runs)
    return report, fitted


def _progress(study: Study, **where: object) -> None:
    """Where the study is, for whoever follows it (the app's Report tab, `status`): progress.json in its
    folder, written whole at each run and each probe sweep."""
    atomic_write_json(study.folder / "progress.json", {**where, "time": time.time()})


# -- timing --------------------------------------------------------------------------------------
def add_seconds(folder: Path, part: str, seconds: float) -> None:
    """Add wall-clock seconds to `part` in the study's timing.json (summed over every invocation:
    a study stopped and started again reports the time it really took)."""
    timing = read_timing(folder)
    timing[part] = round(timing.get(part, 0.0) + seconds, 1)
    atomic_write_json(folder / TIMING_FILE, timing)


@contextlib.contextmanager
def timed(folder: Path, part: str) -> Iterator[None]:
    """The block's wall time added to timing.json's `part`, even when it is interrupted (the time was
    spent)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add_seconds(folder, part, time.perf_counter() - t0)


# -- probes --------------------------------------------------------------------------------------
def fit_probes(paths: list[Path], progress: ProbeProgress | None = None) -> int:
    """Fit (or find cached) every sweep of `probe_jobs`; returns how many were fitted now."""
    jobs = list(probe_jobs(paths))
    opened: dict[str, object] = {}
    fitted = 0
    for i, (url, model, attribute, fmt) in enumerate(jobs):
        s = opened.setdefault(url, store.open(url))
        settings = ProbeSettings(attribute=attribute, bio=fmt)
        if cached(s, model, settings) is None:
            sweep(s, model, settings)
            fitted += 1
        if progress is not None:
            progress(i + 1, len(jobs), f"{Path(url).parent.name} {model} {attribute} {fmt}")
    return fitted


# -- interventions ---------------------------------------------------------------------------------
def patch_runs(paths: list[Path], progress: Callable[[int, int, str], None] | None = None) -> int:
    """Compute (or find cached) the interventions the report reads (`PATCH_ATTRIBUTE`, Stage and Mix,
    the QA-out people, every layer) for every run; returns how many were computed now."""
    from jobs.run.patch import patch
    from store.interventions import PatchSettings

    computed = 0
    for path in paths:
        for _, hit in patch(
            path, store.open(path), list(PAPER_MODELS), PatchSettings(attribute=PATCH_ATTRIBUTE), progress=progress
        ):
            computed += not hit
    return computed
