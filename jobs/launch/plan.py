"""A request for runs, as both front doors make it (the CLI's `run` and `submit`, the app's launch
form; `reproduce` through its study), and its plan: one validated spec and run name per run, every
one checked before any folder is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from jobs.errors import SpecError
from jobs.run.budget import check_fits
from jobs.run.checkpoints import check_model_path, resolve_model
from jobs.run.spec import DEFAULT_PRESET, ExperimentSpec, build_spec, check_run_name, load_config_file, preset_names
from jobs.words import DEFAULT_STRATEGIES, Strategy
from store.settings import check, setting

MAX_SEED = 2**32 - 1  # what numpy and torch both take as a seed


class PlannedRun(NamedTuple):
    spec: ExperimentSpec
    name: str  # the run folder's name under WORKSPACE/runs


@dataclass(frozen=True)
class RunRequest:
    """Runs asked for: a preset, then a config file, then KEY=VALUE overrides and the named settings
    (people, QA-in share, a checkpoint by path, the device) for each seed, with the strategies in one
    run per seed, or in a run per seed and strategy (`per_strategy`). Checked as it is made."""

    preset: str = setting(DEFAULT_PRESET, f"one of: {', '.join(preset_names())}")
    strategies: tuple[Strategy, ...] | None = setting(
        None, "strategies to train (default: stage mix, the paper's comparison)", flag="--strategy"
    )
    seeds: tuple[int, ...] = setting(
        (0,), "seeds (default 0); several: the tables show mean ± std", low=0, high=MAX_SEED, alias="--seed"
    )
    config: Path | None = setting(None, "TOML file of settings, laid out like the presets in jobs/presets/")
    overrides: tuple[str, ...] = setting(
        (), "any setting, e.g. --set train.mix.epochs=30 (repeatable)", flag="--set", metavar="KEY=VALUE", repeat=True
    )
    people: int | None = setting(None, "number of people (data.people)", low=2)
    qa_in_fraction: float | None = setting(None, "share of people whose QA is trained on", above=0, below=1)
    model: str | None = setting(
        None,
        "a local Hugging Face checkpoint folder, or a model imported with `models import`, instead of the "
        "built-in model",
    )
    device: str | None = setting(None, "auto (default), cpu, cuda, cuda:N")
    name: str | None = setting(None, "run folder name (default: from preset, strategies, seed)")
    per_strategy: bool = setting(
        False,
        "one run per seed and strategy (run in parallel; stage and bio each train the BIO phase) instead of one "
        "per seed",
    )

    def __post_init__(self) -> None:
        check(self, SpecError)
        if not self.seeds:
            raise SpecError("give at least one seed, e.g. 0 or 0 1 2")
        if any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise SpecError(f"seeds {' '.join(map(str, self.seeds))}: give whole numbers 0 or more")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"seeds repeat: {' '.join(map(str, self.seeds))}; give each seed once")
        if self.name is not None:
            check_run_name(self.name)

    def settings(self) -> list[str]:
        """Every KEY=VALUE this request sets, the named settings after the overrides."""
        sets = list(self.overrides)
        if self.people is not None:
            sets.append(f"data.people={self.people}")
        if self.qa_in_fraction is not None:
            sets.append(f"data.qa_in_fraction={self.qa_in_fraction}")
        return sets


def plan_runs(request: RunRequest, workspace: Path | None = None, *, models_in: Path | None = None) -> list[PlannedRun]:
    """A validated spec and run name for each run of `request`, in order (seed-major within each
    strategy group), every one checked before any is made; with `workspace`, each also checked to fit
    this machine's memory and the workspace's disk (`jobs.run.budget`). A `model.path` that is a bare
    name (the `smol` preset's `smollm2-135m`) is the model imported under that name into `models_in`
    (default: `workspace`), written into the spec as its folder."""
    models_in = models_in if models_in is not None else workspace
    loaded = load_config_file(request.config) if request.config else None
    checkpoint = {"path": str(Path(request.model).expanduser().resolve())} if request.model else None
    groups = (
        [(s,) for s in (request.strategies or DEFAULT_STRATEGIES)] if request.per_strategy else [request.strategies]
    )
    out = []
    for strategies in groups:
        prefix = f"{request.name}-{strategies[0]}" if request.name and len(groups) > 1 else request.name
        for seed in request.seeds:
            spec = build_spec(
                request.preset,
                strategies=strategies,
                seed=seed,
                config=loaded,
                overrides=request.settings(),
                device=request.device,
                model=checkpoint,
            )
            if spec.model.path is not None and not request.model and models_in is not None:
                folder = resolve_model(spec.model.path, models_in, flag=f"model.path (preset {request.preset})")
                if folder != spec.model.path:
                    spec = build_spec(
                        request.preset,
                        strategies=strategies,
                        seed=seed,
                        config=loaded,
                        overrides=request.settings(),
                        device=request.device,
                        model={"path": str(Path(folder).expanduser().resolve())},
                    )
            if spec.model.path is not None:
                # before any folder is made for it
                check_model_path(spec.model.path, spec.train.row_len if spec.train.packing else None)
            if workspace is not None:
                check_fits(spec, workspace)
            name = spec.default_name() if not prefix else (f"{prefix}-s{seed}" if len(request.seeds) > 1 else prefix)
            out.append(PlannedRun(spec, check_run_name(name)))
    return out
