"""status, cancel, archive, delete, worker; show, compare, plot; presets; models import and list."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.arguments import err_console
from jobs.commands.common import console, print_tables
from jobs.errors import FactrecallError
from jobs.options import (
    CompareCommand,
    DeleteCommand,
    ImportCommand,
    ListCommand,
    PlotCommand,
    PresetsCommand,
    RunsCommand,
    ShowCommand,
    StatusCommand,
    WorkerCommand,
)
from jobs.run.spec import DEFAULT_PRESET, is_name, load_preset, preset_names
from jobs.run.workspace import RUNS, run_path
from jobs.run.workspace import folder as workspace_folder
from jobs.shown import markup, visible
from jobs.words import CHAINS


def cmd_queue(o: StatusCommand, workspace: Path) -> None:
    from rich.table import Table

    from jobs.launch.queue import job_table

    rows = job_table(workspace)
    if o.json:
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
    workspace = workspace.resolve()
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


def cmd_cancel(o: RunsCommand, workspace: Path) -> None:
    from jobs.launch.queue import cancel
    from jobs.run.folder import resolve_run

    names = [resolve_run(workspace, run).name for run in o.runs]  # each a run of this workspace
    for name in names:
        console.print(cancel(workspace, name), highlight=False)


def cmd_archive(o: RunsCommand, workspace: Path) -> None:
    remove(o.runs, workspace, delete=False)


def cmd_delete(o: DeleteCommand, workspace: Path) -> None:
    remove(o.runs, workspace, delete=True, sure=o.yes)


def remove(runs: tuple[str, ...], workspace: Path, *, delete: bool, sure: bool = True) -> None:
    """`archive` and `delete`: every run named is checked first (it exists, it is neither queued nor
    running), so one that cannot go leaves all of them where they are."""
    from jobs.launch.queue import queued_runs, remove_run, run_status
    from jobs.run.folder import resolve_run

    folders = [resolve_run(workspace, run) for run in runs]
    for folder in folders:
        if folder.resolve().parent != run_path(workspace, folder.name).parent.resolve():
            raise FactrecallError(f"{folder} is not a run of the workspace {workspace}: give --workspace, or its name")
    if delete and not sure:
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


def cmd_worker(o: WorkerCommand, workspace: Path) -> None:
    from jobs.launch.queue import run_worker

    run_worker(workspace.resolve(), slots=o.slots)


def cmd_show(o: ShowCommand, workspace: Path) -> None:
    from jobs.run.folder import read_metrics, resolve_run

    paths = [resolve_run(workspace, r) for r in o.runs]
    if o.json:
        print(json.dumps({p.name: read_metrics(p) for p in paths}, indent=2))
        return
    print_tables(paths)


def cmd_compare(o: CompareCommand, workspace: Path) -> None:
    from jobs.run.folder import load_spec, read_metrics, resolve_run
    from jobs.run.tables import comparison_markdown, comparison_table

    if o.runs:
        paths = [resolve_run(workspace, r) for r in o.runs]
    else:
        paths, skipped = [], []
        runs = workspace_folder(workspace, RUNS)
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
    models = o.models or tuple(CHAINS)
    if o.markdown:
        print(visible(comparison_markdown(paths, models), lines=True), end="")
    else:
        console.print(comparison_table(paths, models))


def cmd_plot(o: PlotCommand, workspace: Path) -> None:
    from jobs.run.curves import curves
    from jobs.run.files import check_output
    from jobs.run.folder import resolve_run

    paths = [resolve_run(workspace, r) for r in o.runs]
    out = check_output(Path(o.out) if o.out else paths[0] / "curves.png", "figure", force=o.force)
    try:
        written = curves(paths, out, title=o.title)
    except ValueError as err:
        raise FactrecallError(f"{err}; re-run with --set train.eval_every=250 to log one") from None
    console.print(f"wrote {written}", soft_wrap=True)


def cmd_presets(o: PresetsCommand, workspace: Path) -> None:
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


def cmd_import(o: ImportCommand, workspace: Path) -> None:
    from rich.table import Table

    from jobs.models import import_model

    folder, manifest = import_model(
        Path(o.file),
        workspace,
        name=o.name,
        check=not o.unchecked,
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


def cmd_list(o: ListCommand, workspace: Path) -> None:
    from rich.table import Table

    from jobs.run.checkpoints import imported

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
