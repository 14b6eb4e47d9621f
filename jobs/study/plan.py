"""The study's design: which runs (one per seed, training the BIO-only, Stage and Mix models with
snapshots along every phase) and which probe sweeps the report reads. Planning validates every run's
spec and writes nothing; `reproduce.py` runs a plan, `dryrun.py` prices one, `report.py` reads one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import store
from jobs.errors import FactrecallError
from jobs.launch.plan import RunRequest, plan_runs
from jobs.run.spec import ExperimentSpec
from jobs.run.workspace import run_path, study_path
from jobs.words import ATTRIBUTES, BIO_FORMATS
from store.names import REPORT_SITES, STORE_NAME, TRAJECTORY_NAME, parse_sites

STUDY_STRATEGIES = ("bio", "stage", "mix")  # the paper's BIO-tuned, Stage ("QA-tuned") and Mix-tuned models
PAPER_MODELS = ("stage", "mix")  # the models of Figures 3 and 4
TRAJECTORY_FORMAT = "bio_long"  # the format the paper's gap is about
PATCH_ATTRIBUTE = "job"  # the interventions the report reads: job (as the paper's figures), QA-out people
DEFAULT_SNAPSHOTS = 4
REPORT_MODELS = ("majority", "untrained", "bio", "stage", "mix")  # the rows of the report's Figure 5
ACCURACY_COLUMNS = ("avg", *ATTRIBUTES)  # exact match: the mean, then each attribute


@dataclass
class Study:
    """A planned study: its name and folder (WORKSPACE/reproduce/NAME), and one (spec, run folder) per seed."""

    name: str
    folder: Path
    runs: list[tuple[ExperimentSpec, Path]] = field(default_factory=list)
    snapshots: int = DEFAULT_SNAPSHOTS
    sites: tuple[str, ...] = REPORT_SITES  # the report's "Where the fact is" (jobs.study.where)

    @property
    def paths(self) -> list[Path]:
        return [path for _, path in self.runs]

    @property
    def preset(self) -> str:
        return self.runs[0][0].preset

    @property
    def workspace(self) -> Path:
        return self.folder.parent.parent


def plan_study(
    workspace: Path,
    request: RunRequest,
    snapshots: int = DEFAULT_SNAPSHOTS,
    fits: bool = True,
    sites: tuple[str, ...] = REPORT_SITES,
) -> Study:
    """The study `request` asks for (its preset, seeds, settings and checkpoint; its name, default the
    preset, names the study), every run's spec validated before anything is written: strategies bio,
    stage and mix, and `snapshots` checkpoints along each phase. Its runs are reproduce-NAME-sSEED.
    With `fits`, each run is checked to fit this machine (a dry run plans for another machine)."""
    if snapshots < 0:
        raise FactrecallError(f"--snapshots {snapshots}: give 0 (only the end of training) or more")
    name = request.name or request.preset
    try:
        sites = parse_sites(sites)
    except ValueError as err:
        raise FactrecallError(f"--sites: {err}") from None
    study = Study(name, study_path(workspace, name), snapshots=snapshots, sites=sites)
    for seed in request.seeds:
        one = dataclasses.replace(
            request,
            strategies=STUDY_STRATEGIES,
            seeds=(seed,),
            per_strategy=False,
            overrides=(*request.overrides, f"train.snapshots={snapshots}"),
            name=f"reproduce-{name}-s{seed}",
        )
        ((spec, run_name),) = plan_runs(one, workspace if fits else None, models_in=workspace)
        study.runs.append((spec, run_path(workspace, run_name)))
    return study


def probe_jobs(paths: list[Path]) -> Iterator[tuple[str, str, str, str]]:
    """(store url, model, attribute, bio format) of every sweep the report reads, in the order they
    are fitted: the paper's (Stage and Mix, both BIO formats), the untrained model's (the baseline of
    every probe table, and with BIO_long the trajectory's start), then the trajectory's (BIO_long: bio
    from the activation store, then every snapshot)."""
    for path in paths:
        main = str(path / STORE_NAME)
        for model in (*PAPER_MODELS, "untrained"):
            for fmt in BIO_FORMATS:
                for attribute in ATTRIBUTES:
                    yield main, model, attribute, fmt
        for attribute in ATTRIBUTES:
            yield main, "bio", attribute, TRAJECTORY_FORMAT
        trajectory = path / TRAJECTORY_NAME
        if trajectory.exists():
            for model in store.open(trajectory).models:
                for attribute in ATTRIBUTES:
                    yield str(trajectory), model, attribute, TRAJECTORY_FORMAT


def check_complete(study: Study) -> None:
    """Refuse a report over runs that are not finished (a study stopped part way)."""
    for spec, path in study.runs:
        for step in ("dump", "dump-trajectory") if spec.train.snapshots else ("dump",):
            if not (path / "done" / f"{step}.json").exists():
                raise FactrecallError(
                    f"run {path.name} has not finished ({step} is not done); "
                    "run the same reproduce command again to continue it"
                )
