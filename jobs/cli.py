"""`factrecall-jobs`: headless jobs.

    factrecall-jobs run                          # the paper's comparison (Stage and Mix) on the cpu preset
    factrecall-jobs run --strategy mix --seed 0  # one strategy (bio, qa, stage, mix)
    factrecall-jobs run --seeds 0 1 2            # three runs, reported as mean ± std
    factrecall-jobs reproduce                    # the paper's whole study, 3 seeds, and its report
    factrecall-jobs submit --seeds 0 1 2         # the same, queued to a background worker (survives the shell)
    factrecall-jobs submit --executor slurm --seeds 0 1 2 --partition gpu   # to Slurm, one array job
    factrecall-jobs status                       # what is queued and running; `cancel RUN` stops one
    factrecall-jobs archive RUN                  # out of every list, into WORKSPACE/archive/ (`delete RUN --yes`: for good)
    factrecall-jobs resume RUN                   # continue a killed run (re-running the same `run` does too)
    factrecall-jobs show RUN [RUN ...]           # Figure 1 and Figure 5 for runs, side by side
    factrecall-jobs plot RUN [RUN ...]           # accuracy over training, as a PNG
    factrecall-jobs compare [RUN ...]            # a sweep: one row per run and model, differing settings as columns
    factrecall-jobs dump RUN                     # the activation store (run does it after evaluation)
    factrecall-jobs export RUN --hdf5 FILE       # the store as one HDF5 file
    factrecall-jobs probe RUN [RUN ...]          # probes per layer: Acc, delta_rep, delta_mech (Figures 3, 4)
    factrecall-jobs patch RUN [RUN ...]          # interventions: hBIO patched into the QA pass, controls, erasure
    factrecall-jobs presets                      # what each preset sets

The arguments are parsed in jobs/arguments.py; here (about 650 lines) is one short `cmd_*` per command,
each turning its arguments into a call into jobs.run, jobs.launch or jobs.study and its output into
rich text, plus `main`, the one place where a user error becomes one line and an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from jobs.arguments import err_console, parser
from jobs.errors import USER_ERRORS, FactrecallError, first_line
from jobs.launch.procs import TERM_STOPS
from jobs.run.files import homeless_libraries
from jobs.run.spec import DEFAULT_PRESET, is_name, load_preset, preset_names
from jobs.run.workspace import RUNS, run_path
from jobs.run.workspace import folder as workspace_folder
from jobs.shown import SafeConsole, markup, safe_streams, visible
from jobs.words import MODEL_LABELS

# Each verb imports what it needs inside its function: `factrecall-jobs status` or `--help` must not
# pay for torch, transformers and zarr, which only the verbs that run a model or read a store load.

# Piped into a file or a pager, rich would assume 80 columns and cut the probe table's headers and
# wrap every ±: there, tables get the width they need (COLUMNS still sets it).
console = SafeConsole(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)


def _workspace(args: argparse.Namespace) -> Path:
    if not args.workspace.strip():
        raise FactrecallError(
            "the workspace is empty (--workspace '' or FACTRECALL_WORKSPACE= ?); give a folder, "
            "e.g. --workspace workspace"
        )
    return Path(args.workspace).expanduser()


def _execute(run_factory, reuse: bool = True, dump: bool = True) -> None:
    from jobs.console import ConsoleProgress
    from jobs.run.pipeline import execute

    with run_factory() as run:
        console.print(f"[bold]{run.path.name}[/bold]  [dim]{run.path}[/dim]")
        done = sorted(p.stem for p in (run.path / "done").glob("*.json") if run.is_done(p.stem))  # verified
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
        stopped = isinstance(exc, KeyboardInterrupt)
        run.emit(
            "run",
            status="interrupted" if stopped else "failed",
            error="stopped on request (Ctrl-C, `cancel`, or a scheduler's warning); `resume` continues it"
            if stopped
            else first_line(exc),
        )
        raise


def _model(args: argparse.Namespace) -> str | None:
    """--model as a checkpoint folder: a path, or the name of a model imported into the workspace."""
    if not args.model:
        return None
    from jobs.run.checkpoints import resolve_model

    return resolve_model(args.model, _workspace(args))


def _request(args: argparse.Namespace, **fixed):
    """The one RunRequest of `run`, `submit` and `reproduce`, from their flags (validated as it is made)."""
    from jobs.launch.plan import RunRequest

    flags = {
        "preset": args.preset,
        "seeds": tuple(args.seeds if args.seeds is not None else [args.seed]),
        "config": Path(args.config) if args.config else None,
        "overrides": tuple(args.set or ()),
        "people": args.people,
        "model": _model(args),
        "device": args.device,
        "name": args.name,
    }
    for name in ("strategy", "qa_in_fraction", "per_strategy"):  # flags `reproduce` does not take
        if hasattr(args, name):
            flags["strategies" if name == "strategy" else name] = getattr(args, name)
    if flags.get("strategies") is not None:
        flags["strategies"] = tuple(flags["strategies"])
    return RunRequest(**{**flags, **fixed})


def cmd_run(args: argparse.Namespace) -> None:
    from jobs.launch.plan import plan_runs
    from jobs.run.folder import RunFolder

    planned = plan_runs(_request(args), _workspace(args))  # every setting checked before torch is even imported
    from jobs.run.model import pick_device

    pick_device(planned[0].spec.device)  # a device there is none of is refused before any folder is made
    paths = []
    for spec, name in planned:
        path = run_path(_workspace(args), name, make=True)
        _execute(lambda: RunFolder.create_or_resume(path, spec), reuse=not args.no_reuse, dump=not args.no_dump)
        paths.append(path)
    _print_tables(paths)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jobs.run.folder import RunFolder
    from jobs.study.plan import plan_study
    from jobs.study.reproduce import check_idle, run_study

    study = plan_study(_workspace(args), _request(args), snapshots=args.snapshots, fits=not args.dry_run)
    if args.dry_run:
        from jobs.study.dryrun import print_plan

        print_plan(study, console, tflops=args.tflops, gpu_memory=args.gpu_memory)
        return
    if args.executor == "slurm":
        check_idle(study)
        _to_slurm(args, [(spec, path.name) for spec, path in study.runs], dump=True, reuse=True)
        console.print(
            f"when they are done, `factrecall-jobs reproduce` with the same options fits the probes and "
            f"writes {study.folder / 'report.md'}",
            highlight=False,
            soft_wrap=True,
        )
        return
    with Progress(
        TextColumn("{task.fields[label]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.description}"),
        console=console,
        transient=True,
    ) as bar:
        tasks = {
            label: bar.add_task("", total=None, visible=False, label=label) for label in ("probes", "interventions")
        }

        def follow(label: str):
            return lambda done, total, what: bar.update(
                tasks[label], completed=done, total=total, description=what, visible=True
            )

        report, fitted = run_study(
            study,
            lambda spec, path: _execute(lambda: RunFolder.create_or_resume(path, spec)),
            probe_progress=follow("probes"),
            patch_progress=follow("interventions"),
            argv=sys.argv[1:],
        )
    console.print(f"probes: {fitted} sweeps fitted now, the rest found in the stores' caches")
    for claim in report["claims"]:
        console.print(f"({claim['id']}) {claim['verdict']}: {claim['short']}", highlight=False)
    for claim in report.get("causal", []):
        console.print(f"({claim['id']}′) {claim['verdict']}: {claim['short']}", highlight=False)
    console.print(f"wrote {study.folder / 'report.md'}", soft_wrap=True)


def _to_slurm(args: argparse.Namespace, planned: list[tuple[object, str]], *, dump: bool, reuse: bool) -> None:
    """Submit `planned` runs (spec, run name) to Slurm as one array job, made after the executor."""
    from jobs.launch.queue import prepare
    from jobs.launch.slurm import SlurmOptions, make_executor
    from jobs.launch.slurm import submit as submit_slurm

    options = SlurmOptions(
        partition=args.partition,
        gpus=args.gpus,
        cpus=args.cpus,
        time=args.time,
        mem=args.mem,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        parallelism=args.array_parallelism,
        setup=args.setup or [],
    )
    executor, notes = make_executor(_workspace(args), options)  # refuses bad options, or no Slurm, before any folder
    for note in notes:
        console.print(f"[dim]{note}[/dim]", highlight=False)
    made = [name for _, name in planned if not run_path(_workspace(args), name).exists()]
    for spec, name in planned:
        prepare(_workspace(args), spec, name)
    try:
        entries = submit_slurm(
            executor, _workspace(args), [name for _, name in planned], device=args.device, dump=dump, reuse=reuse
        )
    except FactrecallError:  # sbatch refused: the folders made for it go, so nothing is left as if queued
        for name in made:
            shutil.rmtree(run_path(_workspace(args), name), ignore_errors=True)
        raise
    for entry in entries:
        console.print(
            f"submitted [bold]{entry['run']}[/bold] as {entry['cluster']} job {entry['job_id']}", highlight=False
        )
    console.print(
        f"[dim]follow them with `factrecall-jobs status` or factrecall-tui; the scheduler's log of each "
        f"job: {Path(entries[0]['log']).parent}[/dim]",
        highlight=False,
    )


def cmd_submit(args: argparse.Namespace) -> None:
    from jobs.launch.plan import plan_runs
    from jobs.launch.queue import prepare, submit

    # On Slurm the runs go to other machines: their size is checked against them by the scheduler.
    planned = plan_runs(
        _request(args), _workspace(args) if args.executor == "local" else None, models_in=_workspace(args)
    )
    if args.executor == "slurm":
        _to_slurm(args, planned, dump=not args.no_dump, reuse=not args.no_reuse)
        return
    for spec, name in planned:
        prepare(_workspace(args), spec, name)
    for spec, name in planned:
        submit(_workspace(args), name, device=args.device, dump=not args.no_dump, reuse=not args.no_reuse)
        console.print(f"queued [bold]{name}[/bold]", highlight=False)
    console.print(
        "[dim]follow them with `factrecall-jobs status` or factrecall-tui; they run on after this shell closes[/dim]"
    )


def cmd_queue(args: argparse.Namespace) -> None:
    from rich.table import Table

    from jobs.launch.queue import job_table

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
        shown = (
            str(log.resolve().relative_to(workspace))
            if log and log.resolve().is_relative_to(workspace)
            else str(log or "")
        )
        t.add_row(
            row["run"], row["status"], row["executor"], row["job"] or str(row.get("pid") or ""), row["progress"], shown
        )
    console.print(t)


def cmd_cancel(args: argparse.Namespace) -> None:
    from jobs.launch.queue import cancel
    from jobs.run.folder import resolve_run

    names = [resolve_run(_workspace(args), run).name for run in args.runs]  # each a run of this workspace
    for name in names:
        console.print(cancel(_workspace(args), name), highlight=False)


def cmd_archive(args: argparse.Namespace) -> None:
    """`archive` and `delete`: every run named is checked first (it exists, it is neither queued nor
    running), so one that cannot go leaves all of them where they are."""
    from jobs.launch.queue import queued_runs, remove_run, run_status
    from jobs.run.folder import resolve_run

    workspace = _workspace(args)
    delete = args.command == "delete"
    folders = [resolve_run(workspace, run) for run in args.runs]
    for folder in folders:
        if folder.resolve().parent != run_path(workspace, folder.name).parent.resolve():
            raise FactrecallError(f"{folder} is not a run of the workspace {workspace}: give --workspace, or its name")
    if delete and not args.yes:
        raise FactrecallError(
            f"delete removes {', '.join(f.name for f in folders)} and everything in "
            f"{'them' if len(folders) > 1 else 'it'} for good: add --yes, or `archive` instead"
        )
    queued = queued_runs(workspace)
    for folder in folders:
        if (status := run_status(folder, queued)[0]) in ("queued", "running"):
            raise FactrecallError(
                f"run {folder.name} is {status}: cancel it first (`factrecall-jobs cancel {folder.name}`)"
            )
    for folder in folders:
        console.print(remove_run(workspace, folder.name, delete=delete), highlight=False)


def cmd_worker(args: argparse.Namespace) -> None:
    from jobs.launch.queue import run_worker

    run_worker(_workspace(args).resolve(), slots=args.slots)


def cmd_resume(args: argparse.Namespace) -> None:
    from jobs.run.folder import RunFolder, resolve_run

    path = resolve_run(_workspace(args), args.run)
    _execute(lambda: RunFolder.resume(path, device=args.device), reuse=not args.no_reuse, dump=not args.no_dump)
    _print_tables([path])


def cmd_show(args: argparse.Namespace) -> None:
    from jobs.run.folder import read_metrics, resolve_run

    paths = [resolve_run(_workspace(args), r) for r in args.runs]
    if args.json:
        print(json.dumps({p.name: read_metrics(p) for p in paths}, indent=2))
        return
    _print_tables(paths)


def _print_tables(paths: list[Path]) -> None:
    from jobs.run.tables import tables

    for table in tables(paths):
        console.print(table)


def cmd_compare(args: argparse.Namespace) -> None:
    from jobs.run.folder import load_spec, read_metrics, resolve_run
    from jobs.run.tables import comparison_markdown, comparison_table

    if args.runs:
        paths = [resolve_run(_workspace(args), r) for r in args.runs]
    else:
        paths, skipped = [], []
        runs = workspace_folder(_workspace(args), RUNS)
        for path in sorted(
            p.parent for p in runs.glob("*/spec.json") if is_name(p.parent.name) and not p.parent.is_symlink()
        ):
            try:
                load_spec(path)
                read_metrics(path)
                paths.append(path)
            except FactrecallError as err:  # one broken folder does not hide the others
                skipped.append(str(err))
        if not paths:
            raise FactrecallError(
                f"no run in {runs} to compare"
                + (
                    f" ({len(skipped)} cannot be read; the first: {skipped[0]})"
                    if skipped
                    else "; `factrecall-jobs run` makes one"
                )
            )
        for why in skipped:
            err_console.print(f"[yellow]skipped:[/yellow] {markup(why)}", highlight=False, soft_wrap=True)
    models = tuple(args.models)
    if args.markdown:
        print(visible(comparison_markdown(paths, models), lines=True), end="")
    else:
        console.print(comparison_table(paths, models))


def cmd_dump(args: argparse.Namespace) -> None:
    from jobs.console import ConsoleProgress
    from jobs.run.checkpoints import run_models
    from jobs.run.dump import DumpOptions
    from jobs.run.folder import RunFolder, load_spec, resolve_run
    from jobs.run.pipeline import load_prompts, make_tokenizer, run_dump

    options = DumpOptions(
        models=tuple(args.models) if args.models else None,
        url=args.out,
        trajectory=args.trajectory,
        dtype=args.dtype,
        compressor=args.compressor,
        chunk_people=args.chunk_people,
        batch_size=args.batch_size,
    )  # checked before the run folder is opened
    path = resolve_run(_workspace(args), args.run)
    spec = load_spec(path)
    if options.models and not options.trajectory:  # a model it has not: refused before the folder is opened
        known = run_models(RunFolder(path, spec))
        unknown = [m for m in options.models if m not in known]
        if unknown:
            raise FactrecallError(f"run {path.name} has no model {unknown[0]!r}: it has {', '.join(known)}")
    with RunFolder.resume(path, device=args.device) as run:
        if not run.is_done("tokenizer"):
            raise FactrecallError(
                f"run {path.name} has no data and tokenizer yet; `factrecall-jobs resume {path.name}` first"
            )
        all_prompts = load_prompts(run.path)
        tok, targets = make_tokenizer(run, all_prompts)
        with ConsoleProgress(console) as bars, _reporting(run):
            run.listeners.append(bars)
            run.emit("run", status="running", phases=[])
            info = run_dump(run, tok, all_prompts, targets, options)
            run.emit("run", status="done")
    import store

    s = store.open(info["url"])
    console.print(
        f"{s}\n[dim]open it with: import store; store.open({info['url']!r})[/dim]", highlight=False, soft_wrap=True
    )  # whole lines: the URL is copied from here


def _store_of(workspace: Path, run: str) -> str:
    """RUN as a run (its activations.zarr), else as a store path or URL."""
    from jobs.run.folder import resolve_run

    try:
        return str(resolve_run(workspace, run))
    except FactrecallError:
        if "://" in run or run.endswith(".zarr") or Path(run).exists():
            return run
        raise


def cmd_export(args: argparse.Namespace) -> None:
    import numpy as np

    import store
    from jobs.run.budget import free_disk
    from jobs.run.files import check_output
    from store.hdf5 import export_hdf5

    s = store.open(_store_of(_workspace(args), args.run))
    if not s.complete():
        err_console.print(
            "[yellow]note:[/yellow] the store is not completely dumped; unwritten vectors stay NaN "
            "(the `written` array says which)",
            soft_wrap=True,
        )
    from rich.progress import Progress

    out = check_output(Path(args.hdf5), "hdf5", reads=[s.url], force=args.force)
    size = int(np.prod(s.resid.shape)) * s.dtype.itemsize
    if (free := free_disk(out.parent)) is not None and size > free:  # h5py on a full disk can crash the process
        raise FactrecallError(
            f"the export needs about {size / 1e6:,.1f} MB, more than the {free / 1e6:,.1f} MB free "
            f"under {out.parent}; free space or write elsewhere"
        )
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("export", total=None)
        out = export_hdf5(s, out, progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:,.1f} MB)", soft_wrap=True)


def cmd_probe(args: argparse.Namespace) -> None:
    import store
    from jobs.run.files import check_output
    from store.figures import probe_figure
    from store.names import PROBE_LABELS
    from store.probes import (
        ProbeSettings,
        baseline,
        check_request,
        counts,
        frame,
        row_cells,
        summary,
        sweeps,
        table_columns,
    )

    paths = [_store_of(_workspace(args), r) for r in args.runs]
    stores = [store.open(p) for p in paths]
    settings = ProbeSettings(
        attribute=args.attribute,
        bio=f"bio_{args.bio}",
        train_split=args.train_split,
        test_split=args.test_split,
        classes=args.classes,
        backend=args.backend,
        l2=args.l2,
        layers=tuple(args.layers) if args.layers else None,
        controls=not args.no_controls,
    )
    models = check_request(stores, args.models, settings)
    # Where the results go is checked before the fit, so a long fit never ends in a refusal.
    reads = [s.url for s in stores]
    csv = check_output(Path(args.csv), "csv", reads, force=args.force) if args.csv else None
    first = Path(paths[0])
    home = first if (first / "spec.json").exists() else Path(".")
    out = check_output(
        Path(args.out) if args.out else home / f"probe-{args.attribute}-{settings.bio}.png",
        "figure",
        reads,
        force=args.force,
    )
    # The untrained model (in every store) is the baseline of every table: what a probe reads from the
    # prompt's tokens alone, before any fact was learned.
    shown = baseline(stores, models) if args.baseline else models
    with console.status("fitting probes") as status:
        found = list(
            sweeps(
                stores,
                shown,
                settings,
                cache=not args.no_cache,
                progress=lambda done, total, what: status.update(f"probes: {what} ({done}/{total} layers)"),
            )
        )
    df = frame(found)
    agg = summary(df, found)
    several = len(stores) > 1
    from rich.table import Table

    for model in shown:
        rows = agg[agg["model"] == model]
        what = " (baseline: no fact learned yet)" if model == "untrained" and model not in models else ""
        t = Table(
            title=f"{model}{what}: probes for the first token of {args.attribute}, BIO = {settings.bio} "
            f"({rows['runs'].iloc[0]} run{'s' if several else ''}; {counts(df, 'n_classes')} classes, "
            f"train {settings.train_split} {counts(df, 'n_train')} people, test {settings.test_split} "
            f"{counts(df, 'n_test')}; [95% bootstrap interval over people{' and seeds' if several else ''}]"
            f"{'; Sel = accuracy - the control task' if settings.controls else ''})",
            title_justify="left",
        )
        _layer_rows(
            t,
            [PROBE_LABELS[k] for k in table_columns(settings.controls)],
            rows,
            lambda r: row_cells(r, several, settings.controls),
        )
    _write_csv(csv, df)
    title = f'Accuracy for the first token of "{args.attribute}", BIO = {settings.bio}'
    console.print(f"wrote {probe_figure(agg, out, title, MODEL_LABELS)}", soft_wrap=True)


def cmd_patch(args: argparse.Namespace) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    import store
    from jobs.run.files import check_output
    from jobs.run.folder import resolve_run
    from jobs.run.patch import patch
    from store.figures import patch_figure
    from store.interventions import COLUMNS, LABELS, PatchSettings, frame, summary
    from store.probes import check_request, format_cell

    settings = PatchSettings(
        attribute=args.attribute,
        split=args.split,
        people=args.people,
        seed=args.seed,
        layers=tuple(args.layers) if args.layers else None,
        erase=not args.no_erase,
    )
    paths = [resolve_run(_workspace(args), r) for r in args.runs]  # checkpoints are needed: runs, not bare stores
    stores = [store.open(p) for p in paths]
    for s in stores:
        bad = [k for k in settings.layers or () if not -s.layers <= k < s.layers]
        if bad:
            raise FactrecallError(f"layer {bad[0]} does not exist: {s.meta.get('run')} has layers 0..{s.layers - 1}")
    models = check_request(stores, args.models, _probe_settings(args.attribute))
    reads = [s.url for s in stores]
    csv = check_output(Path(args.csv), "csv", reads, force=args.force) if args.csv else None
    out = check_output(
        Path(args.out) if args.out else paths[0] / f"patch-{args.attribute}.png", "figure", reads, force=args.force
    )
    found = []
    with Progress(
        TextColumn("patching"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as bars:
        task = bars.add_task("", total=None)
        for path, s in zip(paths, stores):
            for result, hit in patch(
                path,
                s,
                models,
                settings,
                device=args.device,
                batch_size=args.batch_size,
                cache=not args.no_cache,
                progress=lambda done, total, what: bars.update(task, completed=done, total=total, description=what),
            ):
                found.append((path.name, result))
                if hit:
                    console.print(f"[dim]{path.name} {result['model']}: from the store's cache[/dim]")
    df = frame(found)
    agg = summary(df, [r for _, r in found])
    several = len(stores) > 1
    for model in models:
        rows = agg[agg["model"] == model]
        t = Table(
            title=f"{model}: exact match (%) for {args.attribute} when resid_mid is patched at one layer, the last "
            f"prompt token ({rows['runs'].iloc[0]} run{'s' if several else ''}; {int(df['n_people'].iloc[0])} "
            f"{settings.split} people; [95% bootstrap interval over people{' and seeds' if several else ''}]; "
            f"LEACE removes {int(df['erase_rank'].max())} directions)",
            title_justify="left",
        )
        shown = [c for c in COLUMNS if not (c in ("erase_qa", "erase_bio", "erase_random_qa") and args.no_erase)]
        _layer_rows(t, [LABELS[k] for k in shown], rows, lambda r: [format_cell(r, key, several) for key in shown])
    _write_csv(csv, df)
    title = f'Patching resid_mid at the last prompt token: "{args.attribute}", {settings.split} people'
    console.print(f"wrote {patch_figure(agg, out, title, MODEL_LABELS)}", soft_wrap=True)


def _layer_rows(table, labels: list[str], rows, cells) -> None:
    """A per-layer table of `probe` or `patch`: a column per label, a row per layer (`cells(row)`), printed."""
    table.add_column("layer", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    for _, r in rows.iterrows():
        table.add_row(str(int(r["layer"])), *cells(r))
    console.print(table)


def _write_csv(csv: Path | None, df) -> None:
    from jobs.run.files import atomic_write_bytes

    if csv is not None:
        atomic_write_bytes(csv, df.to_csv(index=False).encode())
        console.print(f"wrote {csv}", soft_wrap=True)


def _probe_settings(attribute: str):
    from store.probes import ProbeSettings

    return ProbeSettings(attribute=attribute)


def cmd_plot(args: argparse.Namespace) -> None:
    from jobs.run.curves import curves
    from jobs.run.files import check_output
    from jobs.run.folder import resolve_run

    paths = [resolve_run(_workspace(args), r) for r in args.runs]
    out = check_output(Path(args.out) if args.out else paths[0] / "curves.png", "figure", force=args.force)
    try:
        written = curves(paths, out, title=args.title)
    except ValueError as err:
        raise FactrecallError(f"{err}; re-run with --set train.eval_every=250 to log one") from None
    console.print(f"wrote {written}", soft_wrap=True)


def cmd_presets(args: argparse.Namespace) -> None:
    for name in preset_names():
        p = load_preset(name)
        d, m, t = p["data"], p["model"], p["train"]
        length = lambda ph: f"{ph['epochs']} ep" if "epochs" in ph else f"{ph['steps']} steps"  # noqa: E731
        console.print(
            f"[bold]{name}[/bold]{' (default)' if name == DEFAULT_PRESET else ''}: {d['people']} people, "
            f"{d['qa_in_fraction']:.0%} QA-in; model {m.get('path') or str(m['layers']) + 'x' + str(m['hidden'])}; "
            f"bio {length(t['bio'])} lr {t['bio']['lr']}, qa {length(t['qa'])} lr {t['qa']['lr']}, "
            f"mix {length(t['mix'])} lr {t['mix']['lr']}",
            soft_wrap=True,  # one preset a line, at any width: a listing to read and to grep
        )


def cmd_models(args: argparse.Namespace) -> None:
    from rich.table import Table

    from jobs.models import import_model
    from jobs.run.checkpoints import imported

    workspace = _workspace(args)
    if args.models_command == "import":
        folder, manifest = import_model(
            Path(args.file),
            workspace,
            name=args.name,
            check=not args.unchecked,
            say=lambda line: console.print(line, soft_wrap=True, highlight=False),
        )
        check = manifest["check"]
        if "perplexity" in check:
            table = Table("English sentence", "perplexity", "words shuffled", title="Is it a trained language model?")
            for row in check["perplexity"]:
                table.add_row(row["text"], f"{row['perplexity']:,.1f}", f"{row['shuffled']:,.1f}")
            console.print(table)
            for row in check["continuations"]:
                console.print(
                    f"  {markup(row['prompt'])}[bold]{markup(row['continuation'].replace(chr(10), ' ⏎ '))}[/bold]",
                    highlight=False,
                    soft_wrap=True,
                )
        console.print(
            f"{manifest['parameters']:,} parameters, {manifest['config']['num_hidden_layers']} layers; "
            f"sha256 {manifest['source']['sha256'][:12]}; `--model {folder.name}` uses it ({folder})",
            soft_wrap=True,
            highlight=False,
        )
        return
    table = Table("name", "parameters", "layers", "source", "sha256", "check")
    for column in (0, 1, 4, 5):  # names and numbers are never folded (the source file's name may be)
        table.columns[column].no_wrap = True
    table.columns[3].overflow = "fold"
    for m in imported(workspace):
        if m.get("damaged"):
            table.add_row(m["name"], "", "", "factrecall-import.json cannot be read", "", "")
            continue
        check = m["check"]
        table.add_row(
            m["name"],
            f"{m['parameters'] / 1e6:,.1f}M",
            str(m["config"]["num_hidden_layers"]),
            f"{m['source']['file']} ({m['source'].get('quantization', '?')})",
            m["source"]["sha256"][:12],
            f"English {check['gap']:,.0f}x" if "gap" in check else "unchecked",
        )
    console.print(
        table if table.row_count else f"no models imported into {workspace}; `factrecall-jobs models import FILE.gguf`"
    )


def _disk_full(err: BaseException) -> bool:
    """ENOSPC, also as libraries report it in their own exception types (safetensors: "No space left
    on device (os error 28)")."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return any(
        "No space left on device" in str(e) or "os error 28" in str(e)
        for e in (err, err.__cause__, err.__context__)
        if e is not None
    )


# verb -> what runs it (`status` and `queue` are one verb under two names)
COMMANDS = {
    "run": cmd_run,
    "reproduce": cmd_reproduce,
    "submit": cmd_submit,
    "status": cmd_queue,
    "queue": cmd_queue,
    "cancel": cmd_cancel,
    "archive": cmd_archive,
    "delete": cmd_archive,
    "worker": cmd_worker,
    "resume": cmd_resume,
    "dump": cmd_dump,
    "probe": cmd_probe,
    "patch": cmd_patch,
    "export": cmd_export,
    "show": cmd_show,
    "plot": cmd_plot,
    "compare": cmd_compare,
    "presets": cmd_presets,
    "models": cmd_models,
}


# The verbs that write into run folders (a full disk there keeps finished steps and checkpoints).
RUN_WRITERS = ("run", "reproduce", "resume", "dump", "worker", "submit", "probe", "patch")


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started from a script's background job, a process inherits SIGINT ignored; `cancel` (and
        # Ctrl-C) must still stop a job, so Python's own handler is put back.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if threading.current_thread() is threading.main_thread() and os.environ.get(TERM_STOPS) == "1":
        # A Slurm task's child: Slurm's SIGTERM (scancel, a time limit, preemption; SIGKILL follows
        # KillWait later) stops it as Ctrl-C does, so it saves what it can rather than dying mid-step.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    safe_streams()
    homeless_libraries()
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a flag refused in one line (jobs.arguments.Parser.error)
        return stop.code if isinstance(stop.code, int) else 2
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) is not a traceback
    if args.threads is not None:  # before torch is imported, and inherited by every job started from here
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    try:
        COMMANDS[args.command](args)
    except USER_ERRORS as err:
        err_console.print(f"[red]error:[/red] {markup(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: finished steps and the last checkpoint are kept; "
            "run the same command again (or `factrecall-jobs resume RUN`) to continue",
            soft_wrap=True,
        )
        return 130
    except Exception as err:
        if _disk_full(err):
            in_runs = args.command in RUN_WRITERS
            where = (
                getattr(err, "filename", None)
                or getattr(args, "hdf5", None)
                or getattr(args, "out", None)
                or ("the run folder" if in_runs else f"in {args.workspace}")
            )
            err_console.print(
                f"[red]error:[/red] disk full writing {markup(str(where))}; free space and run the same command "
                "again" + (": finished steps and the last checkpoint are kept" if in_runs else ""),
                soft_wrap=True,
            )
            return 1
        if not isinstance(err, OSError):
            raise
        if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR, errno.EEXIST):
            err_console.print(
                f"[red]error:[/red] cannot write {markup(str(err.filename))}: {err.strerror}; "
                "choose a writable --workspace",
                soft_wrap=True,
            )
            return 2  # a usage error: the command names a place it cannot write
        raise
    return 0


def entry() -> None:
    """`factrecall-jobs` as a process of its own (the console script, `python -m jobs.cli`, and every job
    the queue, the app or Slurm starts). torch and transformers leave about a million objects that
    Python's collector walks whenever its oldest generation fills, and once more at exit: collecting
    less often and setting them all aside before the interpreter ends took a command with nothing to do
    from 1.4 s more than its bare imports to none (benchmarks/bench_startup.py). Not done by `main`,
    which tests and scripts call in their own process."""
    gc.set_threshold(10_000, 20, 20)
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
