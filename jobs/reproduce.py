"""`factrecall-jobs reproduce`: the paper's whole study, end to end, resumable.

For each seed, one run trains BIO-only, two-stage (Stage: the QA phase on top of the BIO checkpoint)
and mixed (Mix) models, with `train.snapshots` checkpoints kept along every phase; evaluates each
model and snapshot (BIO, QA in, QA out, per attribute); dumps the activation store and the
trajectory store (the snapshots); then fits the probe sweeps: every attribute with BIO_long and
BIO_short for Stage and Mix (the paper's Figures 3 and 4), and every attribute with BIO_long for
every snapshot and its endpoints (how the representation evolves). The report (`jobs/study_report.py`)
is written last, into the study folder WORKSPACE/reproduce/NAME/.

Every step is one of the run's own steps (done markers, checkpoints) or a probe result cached in a
store, so a killed study started again recomputes nothing it finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from jobs.errors import FactrecallError
from jobs.runfolder import atomic_write_json
from jobs.spec import ATTRIBUTES, ExperimentSpec

STRATEGIES = ("bio", "stage", "mix")   # the paper's BIO-tuned, Stage ("QA-tuned") and Mix-tuned models
PAPER_MODELS = ("stage", "mix")        # the models of Figures 3 and 4
BIO_FORMATS = ("bio_long", "bio_short")
TRAJECTORY_FORMAT = "bio_long"         # the format the paper's gap is about
DEFAULT_SNAPSHOTS = 4
TIMING_FILE = "timing.json"


@dataclass
class Study:
    """A planned study: its folder, and one (spec, run folder) per seed."""

    name: str
    folder: Path
    runs: list[tuple[ExperimentSpec, Path]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [path for _, path in self.runs]

    @property
    def preset(self) -> str:
        return self.runs[0][0].preset


def plan_study(workspace: Path, *, preset: str, seeds: list[int], snapshots: int = DEFAULT_SNAPSHOTS,
               config: Path | None = None, overrides: list[str] | None = None, people: int | None = None,
               model: str | None = None, device: str | None = None, name: str | None = None) -> Study:
    """Validate every run's spec before anything is written: strategies bio, stage and mix, and
    `snapshots` checkpoints along each phase."""
    from jobs.queue import plan_runs

    if not seeds:
        raise FactrecallError("give at least one seed (--seeds 0 1 2)")
    if len(set(seeds)) != len(seeds):
        raise FactrecallError(f"seeds repeat: {seeds}")
    name = name or preset
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise FactrecallError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    sets = [*(overrides or []), f"train.snapshots={snapshots}"]
    study = Study(name, workspace / "reproduce" / name)
    for seed in seeds:
        (spec, run_name), = plan_runs(preset=preset, strategies=list(STRATEGIES), seeds=[seed], config=config,
                                      overrides=sets, people=people, model=model, device=device,
                                      name=f"reproduce-{name}-s{seed}")
        study.runs.append((spec, workspace / "runs" / run_name))
    return study


# -- timing --------------------------------------------------------------------------------------
def add_seconds(folder: Path, part: str, seconds: float) -> None:
    """Add wall-clock seconds to `part` in the study's timing.json (summed over every invocation:
    a study stopped and started again reports the time it really took)."""
    file = folder / TIMING_FILE
    timing = json.loads(file.read_text()) if file.exists() else {}
    timing[part] = round(timing.get(part, 0.0) + seconds, 1)
    atomic_write_json(file, timing)


class timed:
    """`with timed(folder, "probes"):` adds the block's wall time to timing.json, even when it is
    interrupted (the time was spent)."""

    def __init__(self, folder: Path, part: str):
        self.folder, self.part = folder, part

    def __enter__(self) -> Self:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        add_seconds(self.folder, self.part, time.perf_counter() - self.t0)


# -- probes --------------------------------------------------------------------------------------
def probe_jobs(paths: list[Path]) -> Iterator[tuple[str, str, str, str]]:
    """(store url, model, attribute, bio format) of every sweep the report reads, in the order they
    are fitted: the paper's (Stage and Mix, both BIO formats), then the trajectory's (BIO_long, the
    endpoints untrained and bio from the activation store, then every snapshot)."""
    import store
    from jobs.dump import TRAJECTORY_NAME

    for path in paths:
        main = str(path / store.STORE_NAME)
        for model in PAPER_MODELS:
            for fmt in BIO_FORMATS:
                for attribute in ATTRIBUTES:
                    yield main, model, attribute, fmt
        for model in ("untrained", "bio"):
            for attribute in ATTRIBUTES:
                yield main, model, attribute, TRAJECTORY_FORMAT
        trajectory = path / TRAJECTORY_NAME
        if trajectory.exists():
            for model in store.open(trajectory).models:
                for attribute in ATTRIBUTES:
                    yield str(trajectory), model, attribute, TRAJECTORY_FORMAT


def fit_probes(paths: list[Path], progress: Callable[[int, int, str], None] | None = None) -> int:
    """Fit (or find cached) every sweep of `probe_jobs`; returns how many were fitted now."""
    import store
    from store.probes import ProbeSettings, cached, sweep

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


def check_complete(study: Study) -> None:
    """Refuse a report over runs that are not finished (a study stopped part way)."""
    for _, path in study.runs:
        for step in ("dump", "dump-trajectory") if study.runs[0][0].train.snapshots else ("dump",):
            if not (path / "done" / f"{step}.json").exists():
                raise FactrecallError(f"run {path.name} has not finished ({step} is not done); "
                                      "run the same reproduce command again to continue it")
