"""run, reproduce, submit, resume: runs made, trained and evaluated, here, queued, or on Slurm."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from jobs.commands.common import console, print_tables
from jobs.errors import FactrecallError, first_line
from jobs.launch.plan import RunRequest
from jobs.options import ReproduceCommand, ResumeCommand, RunCommand, SubmitCommand
from jobs.run.workspace import run_path


def execute(run_factory, reuse: bool = True, dump: bool = True) -> None:
    from jobs.console import ConsoleProgress
    from jobs.run.pipeline import execute

    with run_factory() as run:
        console.print(f"[bold]{run.path.name}[/bold]  [dim]{run.path}[/dim]")
        done = sorted(p.stem for p in (run.path / "done").glob("*.json") if run.is_done(p.stem))  # verified
        if done:
            console.print(f"[dim]resuming; done already: {', '.join(done)}[/dim]")
        with ConsoleProgress(console) as bars, reporting(run):
            run.listeners.append(bars)
            execute(run, reuse=reuse, dump=dump)


@contextlib.contextmanager
def reporting(run):
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


def resolved(request: RunRequest, workspace: Path) -> RunRequest:
    """The request with --model as a checkpoint folder: a path, or the name of a model imported into the workspace."""
    if not request.model:
        return request
    from jobs.run.checkpoints import resolve_model

    return dataclasses.replace(request, model=resolve_model(request.model, workspace))


def cmd_run(o: RunCommand, workspace: Path) -> None:
    from jobs.launch.plan import plan_runs
    from jobs.run.folder import RunFolder

    planned = plan_runs(resolved(o.request, workspace), workspace)  # every setting checked before torch is imported
    from jobs.run.model import pick_device

    pick_device(planned[0].spec.device)  # a device there is none of is refused before any folder is made
    paths = []
    for spec, name in planned:
        path = run_path(workspace, name, make=True)
        execute(lambda: RunFolder.create_or_resume(path, spec), reuse=o.reuse, dump=o.dump)
        paths.append(path)
    print_tables(paths)


def cmd_reproduce(o: ReproduceCommand, workspace: Path) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jobs.run.folder import RunFolder
    from jobs.study.plan import plan_study
    from jobs.study.reproduce import check_idle, run_study

    if o.json and not o.dry_run:
        raise FactrecallError("--json prints a dry run's plan: give --dry-run too")
    study = plan_study(
        workspace, resolved(o.request, workspace), snapshots=o.snapshots, fits=not o.dry_run, sites=o.sites
    )
    if o.dry_run:
        from jobs.study.dryrun import plan, print_plan

        if o.json:
            print(json.dumps(plan(study, tflops=o.tflops, gpu_memory=o.gpu_memory), indent=1))
        else:
            print_plan(study, console, tflops=o.tflops, gpu_memory=o.gpu_memory)
        return
    if o.executor == "slurm":
        check_idle(study)
        to_slurm(o.slurm, workspace, [(spec, path.name) for spec, path in study.runs], device=o.request.device)
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
        labels = ("probes", "interventions", "sites")
        tasks = {label: bar.add_task("", total=None, visible=False, label=label) for label in labels}

        def follow(label: str):
            return lambda done, total, what: bar.update(
                tasks[label], completed=done, total=total, description=what, visible=True
            )

        report, fitted = run_study(
            study,
            lambda spec, path: execute(lambda: RunFolder.create_or_resume(path, spec)),
            probe_progress=follow("probes"),
            patch_progress=follow("interventions"),
            sites_progress=follow("sites"),
            argv=sys.argv[1:],
        )
    console.print(f"probes: {fitted} sweeps fitted now, the rest found in the stores' caches")
    for claim in report["claims"]:
        console.print(f"({claim['id']}) {claim['verdict']}: {claim['short']}", highlight=False)
    for claim in report.get("causal", []):
        console.print(f"({claim['id']}′) {claim['verdict']}: {claim['short']}", highlight=False)
    console.print(f"wrote {study.folder / 'report.md'}", soft_wrap=True)


def to_slurm(options, workspace: Path, planned, *, device: str | None, dump: bool = True, reuse: bool = True) -> None:
    """Submit `planned` runs (spec, run name) to Slurm as one array job, made after the executor."""
    from jobs.launch.queue import prepare
    from jobs.launch.slurm import make_executor
    from jobs.launch.slurm import submit as submit_slurm

    executor, notes = make_executor(workspace, options)  # refuses bad options, or no Slurm, before any folder
    for note in notes:
        console.print(f"[dim]{note}[/dim]", highlight=False)
    made = [name for _, name in planned if not run_path(workspace, name).exists()]
    for spec, name in planned:
        prepare(workspace, spec, name)
    try:
        entries = submit_slurm(
            executor, workspace, [name for _, name in planned], device=device, dump=dump, reuse=reuse
        )
    except FactrecallError:  # sbatch refused: the folders made for it go, so nothing is left as if queued
        for name in made:
            shutil.rmtree(run_path(workspace, name), ignore_errors=True)
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


def cmd_submit(o: SubmitCommand, workspace: Path) -> None:
    from jobs.launch.plan import plan_runs
    from jobs.launch.queue import prepare, submit

    # On Slurm the runs go to other machines: their size is checked against them by the scheduler.
    request = resolved(o.request, workspace)
    planned = plan_runs(request, workspace if o.executor == "local" else None, models_in=workspace)
    if o.executor == "slurm":
        to_slurm(o.slurm, workspace, planned, device=request.device, dump=o.dump, reuse=o.reuse)
        return
    for spec, name in planned:
        prepare(workspace, spec, name)
    for _, name in planned:
        submit(workspace, name, device=request.device, dump=o.dump, reuse=o.reuse)
        console.print(f"queued [bold]{name}[/bold]", highlight=False)
    console.print(
        "[dim]follow them with `factrecall-jobs status` or factrecall-tui; they run on after this shell closes[/dim]"
    )


def cmd_resume(o: ResumeCommand, workspace: Path) -> None:
    from jobs.run.folder import RunFolder, resolve_run

    path = resolve_run(workspace, o.run)
    execute(lambda: RunFolder.resume(path, device=o.device), reuse=o.reuse, dump=o.dump)
    print_tables([path])
