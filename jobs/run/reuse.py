"""A training phase taken from another run instead of trained again (`factrecall-jobs run` without
`--no-reuse`): a finished run of the same workspace that trained the phase exactly as this run would
(`find_reusable_phase`) lends its final checkpoint and snapshots as hard links, and its training
summary (`reuse_phase`). Also what a trained phase's done marker records, whether it trained here
(`jobs.run.pipeline.run_phase`) or was taken: the files it leaves and the files it trains from.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

from jobs.errors import FactrecallError
from jobs.run.checkpoints import checkpoint_path
from jobs.run.files import check_no_links
from jobs.run.folder import RunFolder, load_spec, read_done, read_metrics
from jobs.run.spec import Phase, is_name
from jobs.run.train import PLAN_VERSION

# Files that must be byte-equal before another run's phase counts as this run's (a different faker
# or torch can make other people or other initial weights from the same seed).
_SAME_INPUTS = ("data/prompts.jsonl", "data/targets.jsonl", "checkpoints/init/model.safetensors")


def find_reusable_phase(run: RunFolder, phase: Phase) -> Path | None:
    """A finished run in the same workspace that trained `phase` exactly as `run` would: equal
    `phase_key`, the same data plan version (the code that orders examples into steps), and
    byte-equal data, targets and initial weights. Returns that run's folder."""
    key = run.spec.phase_key(phase.name)
    for other in sorted(run.path.parent.iterdir()):
        if other == run.path or other.is_symlink() or not is_name(other.name):  # never a folder from elsewhere
            continue
        record = read_done(other, f"train-{phase.name}")
        if not record or record.get("plan", 1) != PLAN_VERSION:
            continue
        try:
            spec = load_spec(other)
        except FactrecallError:
            continue
        if phase.name not in {p.name for p in spec.phases()} or spec.phase_key(phase.name) != key:
            continue
        inputs = [f for f in _SAME_INPUTS if (run.path / f).exists() or (other / f).exists()]
        if (
            all(
                (run.path / f).exists() and (other / f).exists() and filecmp.cmp(run.path / f, other / f, shallow=False)
                for f in inputs
            )
            and (other / "checkpoints" / phase.name / "final" / "model.safetensors").exists()
        ):
            try:
                check_no_links(other)  # what is taken (hard links to its files) is that run's own, inside the workspace
            except FactrecallError:
                continue
            return other
    return None


def _link_tree(source: Path, target: Path) -> None:
    """Copy a checkpoint folder as hard links (no extra disk; the files are never written in place),
    falling back to copies across file systems."""
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def reuse_phase(run: RunFolder, phase: Phase, source: Path) -> None:
    """Take `phase`'s final checkpoint and training summary from the finished run `source`."""
    folder = run.path / "checkpoints" / phase.name
    final, partial = folder / "final", folder / "final.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _link_tree(source / "checkpoints" / phase.name / "final", partial)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    if (source / "checkpoints" / phase.name / "snapshots").is_dir():
        shutil.rmtree(folder / "snapshots", ignore_errors=True)
        _link_tree(source / "checkpoints" / phase.name / "snapshots", folder / "snapshots")
    held = read_done(source, f"train-{phase.name}").get("metrics", {}).get("value") or read_metrics(source).get(
        "train", {}
    ).get(phase.name, {})
    summary = {"reused_from": source.name, **{k: v for k, v in held.items() if k != "reused_from"}}
    run.mark_done(
        f"train-{phase.name}",
        outputs=trained_files(folder),
        inputs=training_inputs(run, phase),
        metrics=(("train", phase.name), summary),
        **{k: v for k, v in summary.items() if k != "curve"},
    )
    shutil.rmtree(folder / "last", ignore_errors=True)


def trained_files(folder: Path) -> list[Path]:
    """What a training phase leaves (its folder RUN/checkpoints/<phase>): the final weights and those of
    every snapshot."""
    return [folder / "final" / "model.safetensors", *sorted(folder.glob("snapshots/step-*/model.safetensors"))]


def training_inputs(run: RunFolder, phase: Phase) -> list[Path]:
    """What a phase trains from: the data, the targets, and the checkpoint it starts from."""
    start = checkpoint_path(run, phase.start) / "model.safetensors"
    return [
        run.path / "data" / "bio.jsonl",
        run.path / "data" / "prompts.jsonl",
        run.path / "data" / "targets.jsonl",
        *([start] if start.is_relative_to(run.path) else []),
    ]
