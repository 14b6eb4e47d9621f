"""dump, export, probe, patch: the activation store, and the probes and interventions computed over it."""

from __future__ import annotations

from pathlib import Path

from jobs.arguments import err_console
from jobs.commands.common import console, layer_rows, write_csv
from jobs.commands.runs import reporting
from jobs.errors import FactrecallError
from jobs.options import DumpCommand, ExportCommand, PatchCommand, ProbeCommand
from jobs.words import MODEL_LABELS
from store.settings import ProbeSettings


def cmd_dump(o: DumpCommand, workspace: Path) -> None:
    from jobs.console import ConsoleProgress
    from jobs.run.checkpoints import run_models
    from jobs.run.folder import RunFolder, load_spec, resolve_run
    from jobs.run.pipeline import load_prompts, make_tokenizer, run_dump

    options = o.options  # checked as the flags were read, before the run folder is opened
    path = resolve_run(workspace, o.run)
    spec = load_spec(path)
    if options.models and not options.trajectory:  # a model it has not: refused before the folder is opened
        known = run_models(RunFolder(path, spec))
        unknown = [m for m in options.models if m not in known]
        if unknown:
            raise FactrecallError(f"run {path.name} has no model {unknown[0]!r}: it has {', '.join(known)}")
    with RunFolder.resume(path, device=o.device) as run:
        if not run.is_done("tokenizer"):
            raise FactrecallError(
                f"run {path.name} has no data and tokenizer yet; `factrecall-jobs resume {path.name}` first"
            )
        all_prompts = load_prompts(run.path)
        tok, targets = make_tokenizer(run, all_prompts)
        with ConsoleProgress(console) as bars, reporting(run):
            run.listeners.append(bars)
            run.emit("run", status="running", phases=[])
            info = run_dump(run, tok, all_prompts, targets, options)
            run.emit("run", status="done")
    import store

    s = store.open(info["url"])
    console.print(
        f"{s}\n[dim]open it with: import store; store.open({info['url']!r})[/dim]", highlight=False, soft_wrap=True
    )  # whole lines: the URL is copied from here


def store_of(workspace: Path, run: str) -> str:
    """RUN as a run (its activations.zarr), else as a store path or URL."""
    from jobs.run.folder import resolve_run

    try:
        return str(resolve_run(workspace, run))
    except FactrecallError:
        if "://" in run or run.endswith(".zarr") or Path(run).exists():
            return run
        raise


def cmd_export(o: ExportCommand, workspace: Path) -> None:
    import numpy as np

    import store
    from jobs.run.budget import free_disk
    from jobs.run.files import check_output
    from store.hdf5 import export_hdf5

    s = store.open(store_of(workspace, o.run))
    if not s.complete():
        err_console.print(
            "[yellow]note:[/yellow] the store is not completely dumped; unwritten vectors stay NaN "
            "(the `written` array says which)",
            soft_wrap=True,
        )
    from rich.progress import Progress

    out = check_output(Path(o.hdf5), "hdf5", reads=[s.url], force=o.force)
    size = sum(int(np.prod(a.shape)) for a in s.arrays.values()) * s.dtype.itemsize
    if (free := free_disk(out.parent)) is not None and size > free:  # h5py on a full disk can crash the process
        raise FactrecallError(
            f"the export needs about {size / 1e6:,.1f} MB, more than the {free / 1e6:,.1f} MB free "
            f"under {out.parent}; free space or write elsewhere"
        )
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("export", total=None)
        out = export_hdf5(s, out, progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:,.1f} MB)", soft_wrap=True)


def cmd_probe(o: ProbeCommand, workspace: Path) -> None:
    import store
    from jobs.run.files import check_output
    from store.figures import probe_figure
    from store.names import PROBE_LABELS
    from store.probe_tables import baseline, counts, frame, row_cells, summary, table_columns
    from store.probes import check_request, sweeps

    paths = [store_of(workspace, r) for r in o.runs]
    stores = [store.open(p) for p in paths]
    settings = o.settings
    models = check_request(stores, o.models, settings)
    # Where the results go is checked before the fit, so a long fit never ends in a refusal.
    reads = [s.url for s in stores]
    csv = check_output(Path(o.written.csv), "csv", reads, force=o.written.force) if o.written.csv else None
    first = Path(paths[0])
    home = first if (first / "spec.json").exists() else Path(".")
    out = check_output(
        Path(o.written.out) if o.written.out else home / f"probe-{settings.attribute}-{settings.bio}.png",
        "figure",
        reads,
        force=o.written.force,
    )
    # The untrained model (in every store) is the baseline of every table: what a probe reads from the
    # prompt's tokens alone, before any fact was learned.
    shown = baseline(stores, models) if o.baseline else models
    with console.status("fitting probes") as status:
        found = list(
            sweeps(
                stores,
                shown,
                settings,
                cache=o.written.cache,
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
            title=f"{model}{what}: probes for the first token of {settings.attribute}, BIO = {settings.bio} "
            f"({rows['runs'].iloc[0]} run{'s' if several else ''}; {counts(df, 'n_classes')} classes, "
            f"train {settings.train_split} {counts(df, 'n_train')} people, test {settings.test_split} "
            f"{counts(df, 'n_test')}; [95% bootstrap interval over people{' and seeds' if several else ''}]"
            f"{'; Sel = accuracy - the control task' if settings.controls else ''})",
            title_justify="left",
        )
        layer_rows(
            t,
            [PROBE_LABELS[k] for k in table_columns(settings.controls)],
            rows,
            lambda r: row_cells(r, several, settings.controls),
        )
    write_csv(csv, df)
    title = f'Accuracy for the first token of "{settings.attribute}", BIO = {settings.bio}'
    console.print(f"wrote {probe_figure(agg, out, title, MODEL_LABELS)}", soft_wrap=True)


def cmd_patch(o: PatchCommand, workspace: Path) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    import store
    from jobs.run.files import check_output
    from jobs.run.folder import resolve_run
    from jobs.run.patch import patch
    from store.figures import patch_figure
    from store.interventions import COLUMNS, LABELS, frame, summary
    from store.probe_tables import format_cell
    from store.probes import check_request

    settings = o.settings
    paths = [resolve_run(workspace, r) for r in o.runs]  # checkpoints are needed: runs, not bare stores
    stores = [store.open(p / o.store) for p in paths]
    for s in stores:
        bad = [k for k in settings.layers or () if not -s.layers <= k < s.layers]
        if bad:
            raise FactrecallError(f"layer {bad[0]} does not exist: {s.meta.get('run')} has layers 0..{s.layers - 1}")
    models = check_request(stores, o.models, ProbeSettings(attribute=settings.attribute))
    reads = [s.url for s in stores]
    csv = check_output(Path(o.written.csv), "csv", reads, force=o.written.force) if o.written.csv else None
    out = check_output(
        Path(o.written.out) if o.written.out else paths[0] / f"patch-{settings.attribute}.png",
        "figure",
        reads,
        force=o.written.force,
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
                device=o.device,
                batch_size=o.batch_size,
                cache=o.written.cache,
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
            title=f"{model}: exact match (%) for {settings.attribute} when resid_mid is patched at one layer, the last "
            f"prompt token ({rows['runs'].iloc[0]} run{'s' if several else ''}; {int(df['n_people'].iloc[0])} "
            f"{settings.split} people; [95% bootstrap interval over people{' and seeds' if several else ''}]; "
            f"LEACE removes {int(df['erase_rank'].max())} directions)",
            title_justify="left",
        )
        shown = [c for c in COLUMNS if not (c in ("erase_qa", "erase_bio", "erase_random_qa") and not settings.erase)]
        layer_rows(t, [LABELS[k] for k in shown], rows, lambda r: [format_cell(r, key, several) for key in shown])
    write_csv(csv, df)
    title = f'Patching resid_mid at the last prompt token: "{settings.attribute}", {settings.split} people'
    console.print(f"wrote {patch_figure(agg, out, title, MODEL_LABELS)}", soft_wrap=True)
