"""`factrecall-jobs`: headless jobs.

    factrecall-jobs run                          # the paper's comparison (Stage and Mix) on the cpu preset
    factrecall-jobs run --strategy mix --seed 0  # one strategy (bio, qa, stage, mix)
    factrecall-jobs run --seeds 0 1 2            # three runs, reported as mean ± std
    factrecall-jobs reproduce                    # the paper's whole study, 3 seeds, and its report
    factrecall-jobs submit --seeds 0 1 2         # the same, queued to a background worker (survives the shell)
    factrecall-jobs submit --executor slurm --seeds 0 1 2 --partition gpu   # to Slurm, one array job
    factrecall-jobs status                       # what is queued and running; `cancel RUN` stops one
    factrecall-jobs resume RUN                   # continue a killed run (re-running the same `run` does too)
    factrecall-jobs show RUN [RUN ...]           # Figure 1 and Figure 5 for runs, side by side
    factrecall-jobs plot RUN [RUN ...]           # accuracy over training, as a PNG
    factrecall-jobs compare [RUN ...]            # a sweep: one row per run and model, differing settings as columns
    factrecall-jobs dump RUN                     # the activation store (run does it after evaluation)
    factrecall-jobs export RUN --hdf5 FILE       # the store as one HDF5 file
    factrecall-jobs probe RUN [RUN ...]          # probes per layer: Acc, delta_rep, delta_mech (Figures 3, 4)
    factrecall-jobs presets                      # what each preset sets
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console

from jobs.errors import FactrecallError
from store.errors import StoreError
from jobs.spec import DEFAULT_PRESET, STRATEGIES, load_preset, preset_names

console = Console()
err_console = Console(stderr=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        err_console.print(f"[red]error:[/red] {message} (see {self.prog} --help)", highlight=False, soft_wrap=True)
        raise SystemExit(2)


def _workspace(args: argparse.Namespace) -> Path:
    return Path(args.workspace).expanduser()


def _execute(run_factory, reuse: bool = True, dump: bool = True) -> None:
    from jobs.console import ConsoleProgress
    from jobs.pipeline import execute

    with run_factory() as run:
        console.print(f"[bold]{run.path.name}[/bold]  [dim]{run.path}[/dim]")
        done = sorted(p.stem for p in (run.path / "done").glob("*.json"))
        if done:
            console.print(f"[dim]resuming; done already: {', '.join(done)}[/dim]")
        with ConsoleProgress(console) as bars, _reporting(run):
            run.listeners.append(bars)
            execute(run, reuse=reuse, dump=dump)


@contextlib.contextmanager
def _reporting(run):
    """A job's end in events.jsonl, as `status` and the TUI read it: failed or interrupted, with why."""
    try:
        yield
    except BaseException as exc:
        run.emit("run", status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                 error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise


def _planned(args: argparse.Namespace) -> list[tuple[object, str]]:
    """(spec, run name) for each seed, or with --per-strategy for each seed and strategy."""
    from jobs.queue import plan_runs
    from jobs.spec import DEFAULT_STRATEGIES

    groups = [[s] for s in (args.strategy or DEFAULT_STRATEGIES)] if getattr(args, "per_strategy", False) else [args.strategy]
    out = []
    for strategies in groups:
        name = f"{args.name}-{strategies[0]}" if args.name and len(groups) > 1 else args.name
        out += plan_runs(preset=args.preset, strategies=strategies,
                         seeds=args.seeds if args.seeds is not None else [args.seed],
                         config=Path(args.config) if args.config else None, overrides=args.set, people=args.people,
                         qa_in_fraction=args.qa_in_fraction, model=args.model, device=args.device, name=name)
    return out


def cmd_run(args: argparse.Namespace) -> None:
    from jobs.model import pick_device
    from jobs.runfolder import RunFolder

    planned = _planned(args)
    pick_device(planned[0][0].device)  # a device there is none of is refused before any folder is made
    paths = []
    for spec, name in planned:
        path = _workspace(args) / "runs" / name
        _execute(lambda: RunFolder.create_or_resume(path, spec), reuse=not args.no_reuse, dump=not args.no_dump)
        paths.append(path)
    _print_tables(paths)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jobs.reproduce import fit_probes, plan_study, timed
    from jobs.runfolder import RunFolder, atomic_write_json

    study = plan_study(_workspace(args), preset=args.preset, seeds=args.seeds, snapshots=args.snapshots,
                       config=Path(args.config) if args.config else None, overrides=args.set, people=args.people,
                       model=args.model, device=args.device, name=args.name)
    if args.dry_run:
        from jobs.dryrun import print_plan

        print_plan(study, console, tflops=args.tflops, gpu_memory=args.gpu_memory)
        return
    from jobs.queue import queued_runs

    busy = queued_runs(_workspace(args))
    waiting = [p.name for p in study.paths if p.name in busy]
    if waiting:
        raise FactrecallError(f"{', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} queued or running "
                              "(`factrecall-jobs status`); run reproduce again once they are done")
    if args.executor == "slurm":
        _to_slurm(args, study.runs)
        console.print(f"when they are done, `factrecall-jobs reproduce` with the same options fits the probes and "
                      f"writes {study.folder / 'report.md'}", highlight=False, soft_wrap=True)
        return
    study.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(study.folder / "plan.json", {
        "name": study.name, "preset": study.preset, "seeds": args.seeds, "snapshots": args.snapshots,
        "runs": [str(p.relative_to(_workspace(args))) for p in study.paths], "argv": sys.argv[1:]})
    for spec, path in study.runs:
        with timed(study.folder, f"run {path.name}"):
            _execute(lambda: RunFolder.create_or_resume(path, spec))
    with timed(study.folder, "probes"), Progress(TextColumn("probes"), BarColumn(), MofNCompleteColumn(),
                                                  TimeRemainingColumn(), TextColumn("[dim]{task.description}"),
                                                  console=console, transient=True) as bar:
        task = bar.add_task("", total=None)
        fitted = fit_probes(study.paths, lambda done, total, what: bar.update(task, completed=done, total=total,
                                                                            description=what))
    console.print(f"probes: {fitted} sweeps fitted now, the rest found in the stores' caches")
    from jobs.study_report import write_report

    with timed(study.folder, "report"):
        report = write_report(study)
    for claim in report["claims"]:
        console.print(f"({claim['id']}) {claim['verdict']}: {claim['short']}", highlight=False)
    console.print(f"wrote {study.folder / 'report.md'}")


def _to_slurm(args: argparse.Namespace, planned: list[tuple[object, Path | str]]) -> None:
    """Submit `planned` runs (spec, folder or name) to Slurm as one array job, made after the executor."""
    from jobs.queue import prepare
    from jobs.slurm import SlurmOptions, make_executor, submit as submit_slurm

    options = SlurmOptions(partition=args.partition, gpus=args.gpus, cpus=args.cpus, time=args.time, mem=args.mem,
                           account=args.account, qos=args.qos, constraint=args.constraint,
                           parallelism=args.array_parallelism, setup=args.setup or [])
    executor = make_executor(_workspace(args), options)  # refuses bad options, or no Slurm, before any folder
    names = [Path(name).name for _, name in planned]
    for (spec, _), name in zip(planned, names):
        prepare(_workspace(args), spec, name)
    entries = submit_slurm(executor, _workspace(args), names, device=args.device, dump=not getattr(args, "no_dump", False),
                           reuse=not getattr(args, "no_reuse", False))
    for entry in entries:
        console.print(f"submitted [bold]{entry['run']}[/bold] as {entry['cluster']} job {entry['job_id']}", highlight=False)
    console.print(f"[dim]follow them with `factrecall-jobs status` or factrecall-tui; the scheduler's log of each "
                  f"job: {Path(entries[0]['log']).parent}[/dim]", highlight=False)


def cmd_submit(args: argparse.Namespace) -> None:
    from jobs.queue import prepare, submit

    planned = _planned(args)
    if args.executor == "slurm":
        _to_slurm(args, planned)
        return
    for spec, name in planned:
        prepare(_workspace(args), spec, name)
    for spec, name in planned:
        submit(_workspace(args), name, device=args.device, dump=not args.no_dump, reuse=not args.no_reuse)
        console.print(f"queued [bold]{name}[/bold]", highlight=False)
    console.print("[dim]follow them with `factrecall-jobs status` or factrecall-tui; they run on after this "
                  "shell closes[/dim]")


def cmd_queue(args: argparse.Namespace) -> None:
    from rich.table import Table

    from jobs.queue import job_table

    rows = job_table(_workspace(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("nothing queued or running")
        return
    t = Table(title_justify="left")
    t.add_column("run", min_width=max(len(r["run"]) for r in rows), no_wrap=True)
    for name in ("status", "executor", "job / pid", "progress"):
        t.add_column(name)
    t.add_column("log", overflow="fold")
    workspace = _workspace(args).resolve()
    for row in rows:
        log = Path(row["log"]) if row["log"] else None
        shown = str(log.resolve().relative_to(workspace)) if log and log.resolve().is_relative_to(workspace) else str(log or "")
        t.add_row(row["run"], row["status"], row["executor"], row["job"] or str(row.get("pid") or ""), row["progress"], shown)
    console.print(t)


def cmd_cancel(args: argparse.Namespace) -> None:
    from jobs.queue import cancel

    for run in args.runs:
        console.print(cancel(_workspace(args), run), highlight=False)


def cmd_worker(args: argparse.Namespace) -> None:
    from jobs.queue import run_worker

    run_worker(_workspace(args).resolve(), slots=args.slots)


def cmd_resume(args: argparse.Namespace) -> None:
    from jobs.runfolder import RunFolder, resolve_run

    path = resolve_run(_workspace(args), args.run)
    _execute(lambda: RunFolder.resume(path, device=args.device), reuse=not args.no_reuse, dump=not args.no_dump)
    _print_tables([path])


def cmd_show(args: argparse.Namespace) -> None:
    from jobs.runfolder import read_metrics, resolve_run

    paths = [resolve_run(_workspace(args), r) for r in args.runs]
    if args.json:
        print(json.dumps({p.name: read_metrics(p) for p in paths}, indent=2))
        return
    _print_tables(paths)


def _print_tables(paths: list[Path]) -> None:
    from jobs.report import tables

    for table in tables(paths):
        console.print(table)


def cmd_compare(args: argparse.Namespace) -> None:
    from jobs.report import comparison_markdown, comparison_table
    from jobs.runfolder import load_spec, resolve_run

    if args.runs:
        paths = [resolve_run(_workspace(args), r) for r in args.runs]
    else:
        paths = []
        for path in sorted(p.parent for p in (_workspace(args) / "runs").glob("*/spec.json")):
            try:
                load_spec(path)
                paths.append(path)
            except FactrecallError as err:  # one broken folder does not hide the others
                err_console.print(f"[yellow]skipped:[/yellow] {err}", highlight=False, soft_wrap=True)
        if not paths:
            raise FactrecallError(f"no runs in {_workspace(args) / 'runs'}; `factrecall-jobs run` makes one")
    models = tuple(args.models)
    if args.markdown:
        print(comparison_markdown(paths, models), end="")
    else:
        console.print(comparison_table(paths, models))


def cmd_dump(args: argparse.Namespace) -> None:
    from jobs.console import ConsoleProgress
    from jobs.pipeline import load_prompts, make_tokenizer, run_dump
    from jobs.runfolder import RunFolder, resolve_run

    path = resolve_run(_workspace(args), args.run)
    with RunFolder.resume(path, device=args.device) as run:
        if not run.is_done("tokenizer"):
            raise FactrecallError(f"run {path.name} has no data and tokenizer yet; `factrecall-jobs resume {path.name}` first")
        all_prompts = load_prompts(run.path)
        tok, targets = make_tokenizer(run, all_prompts)
        with ConsoleProgress(console) as bars, _reporting(run):
            run.listeners.append(bars)
            run.emit("run", status="running", phases=[])
            info = run_dump(run, tok, all_prompts, targets, trajectory=args.trajectory, models_wanted=args.models, url=args.out,
                            dtype=args.dtype, compressor=args.compressor, chunk_people=args.chunk_people,
                            batch_size=args.batch_size)
            run.emit("run", status="done")
    import store

    s = store.open(info["url"])
    console.print(f"{s}\n[dim]open it with: import store; store.open({info['url']!r})[/dim]", highlight=False,
                  soft_wrap=True)  # whole lines: the URL is copied from here


def _store_of(workspace: Path, run: str) -> str:
    """RUN as a run (its activations.zarr), else as a store path or URL."""
    from jobs.runfolder import resolve_run

    try:
        return str(resolve_run(workspace, run))
    except FactrecallError:
        if "://" in run or run.endswith(".zarr") or Path(run).exists():
            return run
        raise


def cmd_export(args: argparse.Namespace) -> None:
    import store
    from store.hdf5 import export_hdf5

    s = store.open(_store_of(_workspace(args), args.run))
    if not s.complete():
        err_console.print("[yellow]note:[/yellow] the store is not completely dumped; unwritten vectors stay NaN "
                          "(the `written` array says which)", soft_wrap=True)
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("export", total=None)
        out = export_hdf5(s, Path(args.hdf5).expanduser(), progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:,.1f} MB)")


def cmd_probe(args: argparse.Namespace) -> None:
    import store
    from store.figures import probe_figure
    from store.probes import COLUMNS, LABELS, ProbeSettings, default_models, format_cell, summary, table

    paths = [_store_of(_workspace(args), r) for r in args.runs]
    stores = [store.open(p) for p in paths]
    settings = ProbeSettings(attribute=args.attribute, bio=f"bio_{args.bio}", train_split=args.train_split,
                             test_split=args.test_split, classes=args.classes, backend=args.backend, l2=args.l2,
                             layers=tuple(args.layers) if args.layers else None)
    for s in stores:
        if args.attribute not in s.attributes:
            raise FactrecallError(f"unknown attribute {args.attribute!r}: choose one of {', '.join(s.attributes)}")
    dumped = [set(s.dumped_models()) for s in stores]
    models = args.models or default_models(stores)
    missing = [(s.meta.get("run", s.url), m) for s, d in zip(stores, dumped) for m in models if m not in d]
    if missing:
        raise FactrecallError(f"run {missing[0][0]} has no dumped model {missing[0][1]!r}; "
                              f"`factrecall-jobs dump {missing[0][0]}` writes it")
    if not models:
        raise FactrecallError("these stores share no dumped trained model; `factrecall-jobs dump RUN` writes them")
    with console.status("fitting probes") as status:
        df = table(stores, models, settings, cache=not args.no_cache, progress=lambda what: status.update(f"probes: {what}"))
    agg = summary(df)
    several = len(stores) > 1
    from rich.table import Table

    for model in models:
        rows = agg[agg["model"] == model]
        t = Table(title=f"{model}: probes for the first token of {args.attribute}, BIO = {settings.bio} "
                        f"({rows['runs'].iloc[0]} run{'s' if several else ''}; {int(df['n_classes'].iloc[0])} classes, "
                        f"train {settings.train_split} {int(df['n_train'].iloc[0])} people, test {settings.test_split} "
                        f"{int(df['n_test'].iloc[0])})", title_justify="left")
        t.add_column("layer", justify="right")
        for key in COLUMNS:
            t.add_column(LABELS[key], justify="right")
        for _, r in rows.iterrows():
            t.add_row(str(int(r["layer"])), *(format_cell(r, key, several) for key in COLUMNS))
        console.print(t)
    if args.csv:
        df.to_csv(args.csv, index=False)
        console.print(f"wrote {args.csv}")
    first = Path(paths[0])
    home = first if (first / "spec.json").exists() else Path(".")
    out = Path(args.out) if args.out else home / f"probe-{args.attribute}-{settings.bio}.png"
    title = f"Accuracy for the first token of \"{args.attribute}\", BIO = {settings.bio}"
    console.print(f"wrote {probe_figure(agg, out, title)}")


def cmd_plot(args: argparse.Namespace) -> None:
    from jobs.plots import curves
    from jobs.runfolder import resolve_run

    paths = [resolve_run(_workspace(args), r) for r in args.runs]
    out = Path(args.out) if args.out else paths[0] / "curves.png"
    try:
        written = curves(paths, out, title=args.title)
    except ValueError as err:
        raise FactrecallError(f"{err}; re-run with --set train.eval_every=250 to log one") from None
    console.print(f"wrote {written}")


def cmd_presets(args: argparse.Namespace) -> None:
    for name in preset_names():
        p = load_preset(name)
        d, m, t = p["data"], p["model"], p["train"]
        length = lambda ph: f"{ph['epochs']} ep" if "epochs" in ph else f"{ph['steps']} steps"  # noqa: E731
        console.print(
            f"[bold]{name}[/bold]{' (default)' if name == DEFAULT_PRESET else ''}: {d['people']} people, "
            f"{d['qa_in_fraction']:.0%} QA-in; model {m['layers']}x{m['hidden']}; "
            f"bio {length(t['bio'])} lr {t['bio']['lr']}, qa {length(t['qa'])} lr {t['qa']['lr']}, "
            f"mix {length(t['mix'])} lr {t['mix']['lr']}"
        )


_NO_REUSE = ("train every phase here, even one another finished run in the workspace trained identically "
             "(by default it is linked from there: a QA-phase sweep then trains the BIO phase once)")


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--strategy", nargs="+", choices=STRATEGIES, default=None,
                     help="strategies to train (default: stage mix, the paper's comparison)")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", type=int, nargs="+", help="several seeds; the tables show mean ± std")
    run.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {', '.join(preset_names())}")
    run.add_argument("--config", help="TOML file of settings, laid out like the presets in jobs/presets/")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="any setting, e.g. --set train.mix.epochs=30 (repeatable)")
    run.add_argument("--people", type=int, help="number of people (data.people)")
    run.add_argument("--qa-in-fraction", type=float, help="share of people whose QA is trained on")
    run.add_argument("--model", help="a local Hugging Face checkpoint folder instead of the built-in model")
    run.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    run.add_argument("--name", help="run folder name (default: from preset, strategies, seed)")
    run.add_argument("--no-reuse", action="store_true", help=_NO_REUSE)
    run.add_argument("--no-dump", action="store_true", help="skip the activation store (`dump RUN` adds it later)")


def _slurm_arguments(p: argparse.ArgumentParser, local_help: str = "this machine's worker") -> None:
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help=f"local (default): {local_help}; slurm: one array job through submitit, a task per run "
                   "(FACTRECALL_SUBMITIT_CLUSTER=local runs it through submitit's local executor)")
    slurm = p.add_argument_group("Slurm (--executor slurm), per run")
    slurm.add_argument("--partition", help="partition (default: the cluster's)")
    slurm.add_argument("--gpus", type=int, default=1, help="GPUs (default 1)")
    slurm.add_argument("--cpus", type=int, help="CPUs (default: the cluster's)")
    slurm.add_argument("--time", default="24:00:00", help="time limit, as Slurm writes it (default 24:00:00); at "
                       "the limit the job saves a checkpoint and is requeued, and resumes")
    slurm.add_argument("--mem", help="memory, e.g. 64G (default: the cluster's)")
    slurm.add_argument("--account", help="account to charge")
    slurm.add_argument("--qos", help="quality of service")
    slurm.add_argument("--constraint", help="node features, e.g. a100")
    slurm.add_argument("--array-parallelism", type=int, help="tasks of the array at once (default: all)")
    slurm.add_argument("--setup", action="append", metavar="LINE", help="shell line run before the job, e.g. "
                       "'module load cuda' or 'source ~/factrecall/.venv/bin/activate' (repeatable)")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="factrecall-jobs", description="Headless factrecall jobs: data, training, evaluation.")
    top.add_argument("--workspace", default=os.environ.get("FACTRECALL_WORKSPACE", "workspace"),
                     help="folder holding runs/ (default: ./workspace, or $FACTRECALL_WORKSPACE)")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="generate data, train, evaluate (resumes a run that exists)")
    _run_arguments(run)
    run.set_defaults(func=cmd_run)

    repro = sub.add_parser("reproduce", help="the paper's whole study for several seeds (BIO-only, Stage, Mix; "
                           "evaluation, activations, probes, snapshots along training) and its report")
    repro.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of: {', '.join(preset_names())} "
                       "(paper: 10,000 people and Table 1's settings, for a GPU and --model)")
    repro.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2, as the paper)")
    repro.add_argument("--snapshots", type=int, default=4, help="checkpoints kept, evaluated, dumped and probed "
                       "along each training phase (default 4; 0: only the end of training, as the paper)")
    repro.add_argument("--model", help="a local Hugging Face checkpoint folder instead of the built-in model")
    repro.add_argument("--config", help="TOML file of settings, laid out like the presets in jobs/presets/")
    repro.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting (repeatable)")
    repro.add_argument("--people", type=int, help="number of people (data.people)")
    repro.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    repro.add_argument("--name", help="study name: WORKSPACE/reproduce/NAME, runs reproduce-NAME-sSEED "
                       "(default: the preset)")
    repro.add_argument("--dry-run", action="store_true", help="validate everything and print the plan (steps, "
                       "tokens, memory, disk, time) without writing anything")
    repro.add_argument("--tflops", type=float, help="for --dry-run on a GPU: sustained TFLOP/s to estimate time "
                       "with (default: 100, about a third of an A100's bf16 peak)")
    repro.add_argument("--gpu-memory", type=float, metavar="GB", help="for --dry-run: plan for a GPU of this "
                       "many GB (e.g. 40 or 80 for an A100) and say whether training fits it (default: the "
                       "visible GPU's, if any)")
    _slurm_arguments(repro, local_help="train here, then fit probes and write the report")
    repro.set_defaults(func=cmd_reproduce)

    submit = sub.add_parser("submit", help="queue runs (the same options as run) to a background worker that "
                            "runs them one at a time (one per GPU), after this shell closes too; or to Slurm")
    _run_arguments(submit)
    submit.add_argument("--per-strategy", action="store_true", help="one run per seed and strategy (run in "
                        "parallel; stage and bio each train the BIO phase) instead of one per seed")
    _slurm_arguments(submit)
    submit.set_defaults(func=cmd_submit)

    for name, text in (("status", "the runs queued or running in the workspace: executor, job, progress, log"),
                       ("queue", "the same as status")):
        queue = sub.add_parser(name, help=text)
        queue.add_argument("--json", action="store_true", help="print the rows as JSON")
        queue.set_defaults(func=cmd_queue)

    cancel = sub.add_parser("cancel", help="take runs off the queue, or stop them (what they finished is kept)")
    cancel.add_argument("runs", nargs="+", metavar="RUN")
    cancel.set_defaults(func=cmd_cancel)

    worker = sub.add_parser("worker", help="run queued jobs until the queue is empty (submit starts one)")
    worker.add_argument("--slots", type=int, help="jobs at once (default: one per GPU, else one; $FACTRECALL_SLOTS)")
    worker.set_defaults(func=cmd_worker)

    resume = sub.add_parser("resume", help="continue a run from its last checkpoint")
    resume.add_argument("run", help="run name (under WORKSPACE/runs) or path")
    resume.add_argument("--device", default=None)
    resume.add_argument("--no-reuse", action="store_true", help=_NO_REUSE)
    resume.add_argument("--no-dump", action="store_true", help="skip the activation store")
    resume.set_defaults(func=cmd_resume)

    dump = sub.add_parser("dump", help="write per-layer resid_mid vectors of every prompt format into the run's "
                          "activation store (resumes a killed dump)")
    dump.add_argument("run", help="run name (under WORKSPACE/runs) or path")
    dump.add_argument("--models", nargs="+", help="models to dump (default: untrained and every trained phase)")
    dump.add_argument("--trajectory", action="store_true", help="the snapshots kept along training "
                      "(train.snapshots) instead, into RUN/trajectory.zarr")
    dump.add_argument("--dtype", choices=("float16", "float32"),
                      help="stored precision (default: the existing store's, else float16: half the disk, "
                           "about 3 significant digits)")
    dump.add_argument("--compressor", choices=("none", "zstd"),
                      help="chunk compression (default: the existing store's, else none: see "
                           "benchmarks/RESULTS.md for what zstd saves and costs)")
    dump.add_argument("--chunk-people", type=int, help="people per chunk (default: the existing store's, else as "
                      "many as fit 4 MiB)")
    dump.add_argument("--batch-size", type=int, help="prompts per forward pass (default: train.eval_batch_size)")
    dump.add_argument("--out", help="store path or fsspec URL (default: RUN/activations.zarr)")
    dump.add_argument("--device", default=None)
    dump.set_defaults(func=cmd_dump)

    probe = sub.add_parser("probe", help="linear probes per layer: the four accuracies, delta_rep and delta_mech "
                           "(the paper's Figures 3 and 4), as a table and a PNG")
    probe.add_argument("runs", nargs="+", metavar="RUN", help="runs (or stores); several are seeds: mean ± std")
    probe.add_argument("--attribute", default="job", help="attribute to probe (default: job, as the paper's figures)")
    probe.add_argument("--bio", choices=("long", "short"), default="long", help="BIO_long (Figure 3) or BIO_short (Figure 4)")
    probe.add_argument("--models", nargs="+", help="models to probe (default: stage and mix)")
    probe.add_argument("--train-split", choices=("qa_in", "qa_out", "all"), default="qa_in", help="people the probes learn from")
    probe.add_argument("--test-split", choices=("qa_in", "qa_out", "all"), default="qa_out", help="people they are scored on")
    probe.add_argument("--classes", choices=("observed", "vocab"), default="observed",
                       help="observed: the attribute's first tokens that occur (default); vocab: every token")
    probe.add_argument("--backend", choices=("lbfgs", "ridge", "sklearn"), default="lbfgs",
                       help="lbfgs: logistic regression in torch (default); ridge: closed form; sklearn: the reference")
    probe.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the mean loss (default 1e-3)")
    probe.add_argument("--layers", type=int, nargs="+", metavar="LAYER", help="probe these layers only "
                       "(default: all; -1 is the last)")
    probe.add_argument("--out", help="PNG file (default: probe-ATTRIBUTE-BIO.png in the first run's folder)")
    probe.add_argument("--csv", help="also write the per-run table as CSV")
    probe.add_argument("--no-cache", action="store_true", help="fit again even if the store holds this result")
    probe.set_defaults(func=cmd_probe)

    export = sub.add_parser("export", help="copy an activation store into one HDF5 file")
    export.add_argument("run", help="run name or path, or a store path / URL")
    export.add_argument("--hdf5", required=True, metavar="FILE", help="the .h5 file to write")
    export.set_defaults(func=cmd_export)

    show = sub.add_parser("show", help="the paper's tables for one or more runs")
    show.add_argument("runs", nargs="+", metavar="RUN")
    show.add_argument("--json", action="store_true", help="print metrics.json instead of tables")
    show.set_defaults(func=cmd_show)

    plot = sub.add_parser("plot", help="BIO / QA-in / QA-out accuracy over training, as a PNG (seeds: mean and range)")
    plot.add_argument("runs", nargs="+", metavar="RUN")
    plot.add_argument("--out", help="PNG file (default: curves.png in the first run's folder)")
    plot.add_argument("--title", help="figure title (default: the run or configuration name)")
    plot.set_defaults(func=cmd_plot)

    compare = sub.add_parser("compare", help="compare runs (a sweep): one row per run and model, with the "
                             "settings that differ between them as columns")
    compare.add_argument("runs", nargs="*", metavar="RUN", help="runs (default: every run in the workspace)")
    compare.add_argument("--models", nargs="+", choices=("bio", "stage", "mix", "qa"), default=["bio", "stage", "mix", "qa"],
                         help="trained models to show (default: all)")
    compare.add_argument("--markdown", action="store_true", help="print a markdown table (for docs)")
    compare.set_defaults(func=cmd_compare)

    presets = sub.add_parser("presets", help="list presets")
    presets.set_defaults(func=cmd_presets)
    return top


def _disk_full(err: BaseException) -> bool:
    """ENOSPC, also as libraries report it in their own exception types (safetensors: "No space left
    on device (os error 28)")."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return any("No space left on device" in str(e) or "os error 28" in str(e)
               for e in (err, err.__cause__, err.__context__) if e is not None)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) is not a traceback
    try:
        args.func(args)
    except (FactrecallError, StoreError) as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished steps and the last checkpoint are kept; "
                          "run the same command again (or `factrecall-jobs resume RUN`) to continue", soft_wrap=True)
        return 130
    except Exception as err:
        if _disk_full(err):
            where = getattr(err, "filename", None) or "the run folder"
            err_console.print(f"[red]error:[/red] disk full writing {where}; free space and run the same command "
                              "again: finished steps and the last checkpoint are kept", soft_wrap=True)
            return 1
        if not isinstance(err, OSError):
            raise
        if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR, errno.EEXIST):
            err_console.print(f"[red]error:[/red] cannot write {err.filename}: {err.strerror}; "
                              "choose a writable --workspace", soft_wrap=True)
            return 2  # a usage error: the command names a place it cannot write
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
