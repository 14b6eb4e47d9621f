"""Whether a run can fit this machine at all, checked before anything is written: the memory its data
and its training need, and the disk its checkpoints and stores take, against the machine's memory
and the workspace's free disk. The estimates are lower bounds (what it takes at the very least), so
a refusal is certain and never a guess; `reproduce --dry-run` gives the full plan.

No torch here: the launch form checks as a researcher types.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

from jobs.errors import SpecError
from jobs.run.spec import ExperimentSpec
from store.fileio import TEXT, read_regular

# At the very least, per person: the data in memory as Python objects (people, six BIO sentences,
# eighteen prompts and their answers) and on disk as JSON Lines.
DATA_BYTES_IN_MEMORY = 4_000
DATA_BYTES_ON_DISK = 2_000
FORMATS, ATTRIBUTES, STORE_BYTES = 3, 6, 2  # a store holds float16 vectors of 3 formats x 6 attributes


def _model_shape(spec: ExperimentSpec) -> tuple[int, int, int]:
    """(layers, hidden, parameters, at the least) of the run's model, from its spec or its config.json."""
    if spec.model.path is None:
        layers, hidden, inner = spec.model.layers, spec.model.hidden, spec.model.intermediate
        vocab = 100  # the word-level vocabulary has at least the templates' words
    else:
        config = json.loads(read_regular(Path(spec.model.path) / "config.json", TEXT))
        layers = config.get("num_hidden_layers") or config.get("n_layer") or 1
        hidden = config.get("hidden_size") or config.get("n_embd") or 1
        inner = config.get("intermediate_size") or config.get("n_inner") or 4 * hidden
        vocab = config.get("vocab_size") or 1
    return layers, hidden, vocab * hidden + layers * (4 * hidden * hidden + 2 * hidden * inner)


def needs(spec: ExperimentSpec) -> dict[str, int]:
    """Bytes the run needs at the least: `memory` (the larger of its data and its training: fp32
    weights, gradients and AdamW's two moments, 16 bytes a parameter) and `disk` (data, the start and
    each phase's checkpoint with its snapshots, the optimizer while training, and the stores)."""
    layers, hidden, params = _model_shape(spec)
    people, phases = spec.data.people, len(spec.phases())
    snapshots = max(spec.train.snapshots - 1, 0)
    checkpoints = (1 + phases * (1 + snapshots)) * 4 * params + 8 * params
    models = 1 + phases + phases * snapshots
    stores = models * FORMATS * layers * ATTRIBUTES * people * hidden * STORE_BYTES
    return {
        "memory": max(people * DATA_BYTES_IN_MEMORY, 16 * params),
        "disk": people * DATA_BYTES_ON_DISK + checkpoints + stores,
        "parameters": params,
    }


def memory_limit() -> int | None:
    """This machine's memory, or the cgroup's limit where it is lower (a container, a Slurm job)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            total = min(total, int(text))
    except OSError:
        pass
    return total


def free_disk(where: Path) -> int | None:
    """Free bytes on the filesystem that holds `where` (or its nearest existing parent)."""
    for folder in (where, *where.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _gb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e8 else f"{n / 1e9:,.1f} GB" if n < 1e12 else f"{n / 1e12:,.1f} TB"


def check_fits(spec: ExperimentSpec, workspace: Path) -> None:
    """Refuse a run that cannot fit this machine, in one line naming the estimate and the limit.
    Training memory is checked only where no GPU is visible (on a GPU, `reproduce --dry-run
    --gpu-memory` says whether it fits)."""
    need = needs(spec)
    what = f"{spec.data.people:,} people, a model of {need['parameters']:,} parameters"
    memory = memory_limit()
    gpu = bool(glob.glob("/dev/nvidia[0-9]*")) and spec.device != "cpu"
    wanted = need["memory"] if not gpu else spec.data.people * DATA_BYTES_IN_MEMORY
    if memory is not None and wanted > memory:
        raise SpecError(
            f"this run needs at least {_gb(wanted)} of memory ({what}), more than this machine's "
            f"{_gb(memory)}; use fewer people or a smaller model (`factrecall-jobs reproduce --dry-run` "
            "prints the plan)"
        )
    disk = free_disk(workspace)
    if disk is not None and need["disk"] > disk:
        raise SpecError(
            f"this run needs at least {_gb(need['disk'])} of disk ({what}, its checkpoints and "
            f"activation stores), more than the {_gb(disk)} free under {workspace}; free space, or "
            "use fewer people or a smaller model"
        )


def check_store_fits(people: int, layers: int, hidden: int, models: int, dtype_bytes: int, where: Path) -> None:
    """Refuse a dump whose store cannot fit the free disk where it goes."""
    size = models * FORMATS * layers * ATTRIBUTES * people * hidden * dtype_bytes
    disk = free_disk(where)
    if disk is not None and size > disk:
        raise SpecError(
            f"this store needs {_gb(size)} of disk, more than the {_gb(disk)} free under {where}; "
            "free space, or dump elsewhere with --out"
        )
