"""Where each model of a run lives, and what models a run has (no torch: the dry run, the study and
the dump all ask).

    RUN/checkpoints/init/                        the untrained model (built-in model only; a checkpoint
                                                 given by path is its own init)
    RUN/checkpoints/<phase>/final/               a phase's trained model (Hugging Face folder)
    RUN/checkpoints/<phase>/last/                the resumable checkpoint while the phase trains
    RUN/checkpoints/<phase>/snapshots/step-N/    with train.snapshots: the weights after N steps

A model is named by its phase (`stage`), `untrained` (the start checkpoint), or a snapshot
(`stage@120`: the Stage phase after 120 of its steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.run.folder import RunFolder

UNTRAINED = "untrained"


def snapshot_steps(total: int, snapshots: int) -> list[int]:
    """The steps after which a phase of `total` steps keeps a snapshot: `snapshots` evenly spaced
    points whose last is the phase's end (kept as its final checkpoint, so not listed here)."""
    if not snapshots:
        return []
    return sorted({round(k * total / snapshots) for k in range(1, snapshots)} - {0, total})


def snapshot_name(phase: str, step: int) -> str:
    """`stage@120`: the model phase `phase` had made after `step` of its steps."""
    return f"{phase}@{step}"


def snapshot_dir(phase_folder: Path, step: int) -> Path:
    """Where a phase (its folder RUN/checkpoints/<phase>) keeps the snapshot after `step` steps."""
    return phase_folder / "snapshots" / f"step-{step:06d}"


def checkpoint_path(run: RunFolder, name: str) -> Path:
    """Where the model called `name` lives: `init` or `untrained` (the start checkpoint), a phase's
    final checkpoint, or a snapshot along a phase (`stage@120`)."""
    if name in ("init", UNTRAINED):
        return Path(run.spec.model.path) if run.spec.model.path is not None else run.path / "checkpoints" / "init"
    if "@" in name:
        phase, step = name.split("@")
        return snapshot_dir(run.path / "checkpoints" / phase, int(step))
    return run.path / "checkpoints" / name / "final"


def run_models(run: RunFolder) -> list[str]:
    """Every model a run has at the end of training: the untrained one and each phase's."""
    return [UNTRAINED, *(p.name for p in run.spec.phases())]


def snapshot_models(run: RunFolder) -> list[str]:
    """The snapshots the run's finished phases kept (`train.snapshots`), in training order."""
    trained = run.metrics().get("train", {})
    return [snapshot_name(p.name, step) for p in run.spec.phases() if run.is_done(f"train-{p.name}")
            for step in snapshot_steps(trained[p.name]["steps"], run.spec.train.snapshots)]


def store_models(run: RunFolder, trajectory: bool = False) -> list[str]:
    """The models of the run's activation store, or of its trajectory store (the snapshots)."""
    return snapshot_models(run) if trajectory else run_models(run)
