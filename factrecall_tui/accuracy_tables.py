"""The Accuracy pane's tables, without Textual: the paper's Figure 1 and Figure 5 rows for a
workspace's runs (`build_tables`, blocking file reads: the pane calls it in a worker thread), what its
chart plots per group (bars and curves over training), and the rows as the pane adds them (`rows`).

Runs of one configuration (same spec but the seed) are one group; the cells are `jobs.run.tables.cell`
of `jobs.run.tables.load_groups`, the strings `factrecall-jobs show` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from factrecall_tui.runs import RunSummary
from jobs.errors import USER_ERRORS, first_line
from jobs.run.folder import load_spec
from jobs.run.tables import cell, group_curves, load_groups
from jobs.words import ATTRIBUTE_LABELS, ATTRIBUTES, CHAINS, MODEL_LABELS, SET_LABELS

if TYPE_CHECKING:
    from jobs.run.spec import ExperimentSpec

FIGURES = {"fig1": "Figure 1 · QA out-of-distribution exact match (%)", "fig5": "Figure 5 · exact match (%)"}
TRAINED = tuple(CHAINS)  # bio, stage, mix, qa: a run shows when it has one of these
FIG1_COLUMNS = ("avg", *ATTRIBUTES)
FIG1_LABELS = ["Ave", *(ATTRIBUTE_LABELS[a] for a in ATTRIBUTES)]
FIG5_LABELS = list(SET_LABELS.values())
# Bar colours per model: Stage and Mix are told apart at a glance.
COLORS = {"bio": (140, 140, 140), "stage": (235, 140, 50), "mix": (70, 140, 240), "qa": (200, 90, 200)}


@dataclass
class GroupRows:
    """One configuration's rows of both tables, and what its chart plots."""

    label: str
    seeds: list[int]
    runs: list[str]  # run folder names, for focus_run
    models: list[str]  # metrics keys present, in the paper's order
    fig1: dict[str, list[str]] = field(default_factory=dict)  # model -> cells (Ave, Date, ...)
    fig5: dict[str, list[str]] = field(default_factory=dict)  # model -> cells (BIO, QA in, QA out)
    chart1: dict[str, list[float]] = field(default_factory=dict)  # trained model label -> means
    chart5: dict[str, list[float]] = field(default_factory=dict)
    colors: list[tuple[int, int, int]] = field(default_factory=list)  # one per trained model, in chart order
    seeds_of: dict[str, list[int]] = field(default_factory=dict)  # model -> the seeds whose runs have its results
    curves: dict[str, Curve] = field(default_factory=dict)  # trained model label -> its curve over training


@dataclass
class Curve:
    """One trained model's exact match over training (`factrecall-jobs plot`'s line): the mean over the
    seeds that logged it, per set, at each optimizer step (Stage: its BIO phase, then from `switch` on
    its QA phase)."""

    steps: list[int]
    means: dict[str, list[float]]  # set (bio, qa_in, qa_out) -> mean exact match (%) at each step
    switch: int | None
    seeds: int
    color: tuple[int, int, int]


@dataclass
class Tables:
    groups: list[GroupRows]
    notes: list[str]  # one per run or group that could not be shown, and why


def mean_of(values: list[float]) -> float:
    """What a bar shows: the mean over seeds (0 where no seed has the number, a cell of `–`)."""
    return float(np.mean(values)) if values else 0.0  # np.mean, as jobs.run.tables.cell: the same float


def build_tables(paths: list[Path]) -> Tables:
    """Both figures' rows for the run folders `paths` (blocking file reads: call it off the UI
    thread). A run whose spec cannot be read or is invalid, or a group whose metrics.json is not JSON
    or has another shape, is left out with a note."""
    notes: list[str] = []
    specs: dict[Path, ExperimentSpec] = {}
    for path in paths:
        try:
            specs[path] = load_spec(path)
        except (OSError, *USER_ERRORS) as err:  # an unreadable or invalid spec is one note
            notes.append(f"{path.name}: {first_line(err, with_type=True)}")
    good = [p for p in paths if p in specs]
    try:
        groups = load_groups(good, specs)
    except (OSError, ValueError, *USER_ERRORS) as err:  # e.g. a metrics.json that is not JSON
        return Tables([], [*notes, f"cannot group the runs: {first_line(err, with_type=True)}"])
    out: list[GroupRows] = []
    for group in groups:
        runs = group.paths
        try:
            n = len(group.metrics)
            models = [m for m in MODEL_LABELS if any(m in metrics for metrics in group.metrics)]
            rows = GroupRows(group.label, list(group.seeds), [p.name for p in runs], models)
            for model in models:
                rows.seeds_of[model] = sorted(seed for seed, m in zip(group.seeds, group.metrics) if model in m)
                rows.fig1[model] = [cell(group.values(model, "qa_out", c), n) for c in FIG1_COLUMNS]
                rows.fig5[model] = [cell(group.values(model, s, "avg"), n) for s in SET_LABELS]
                if model in TRAINED:
                    rows.chart1[MODEL_LABELS[model]] = [mean_of(group.values(model, "qa_out", c)) for c in FIG1_COLUMNS]
                    rows.chart5[MODEL_LABELS[model]] = [mean_of(group.values(model, s, "avg")) for s in SET_LABELS]
                    rows.colors.append(COLORS[model])
            for model, (steps, per_set, switch) in group_curves(group.metrics).items():
                rows.curves[MODEL_LABELS[model]] = Curve(
                    [int(x) for x in steps],
                    {k: [float(v) for v in a.mean(0)] for k, a in per_set.items()},
                    switch,
                    len(per_set["qa_out"]),
                    COLORS[model],
                )
        except (KeyError, TypeError, ValueError) as err:  # a metrics.json of another shape
            notes.append(f"{group.label}: metrics.json unreadable ({first_line(err, with_type=True)})")
            continue
        out.append(rows)
    return Tables(out, notes)


def runs_signature(runs: list[RunSummary]) -> tuple:
    """What the tables depend on, cheaply (no file reads): each shown run's folder, spec time and
    result numbers."""
    return tuple((str(r.path), r.mtime, repr([r.metrics.get(m) for m in MODEL_LABELS])) for r in runs)


def seeds_said(group: GroupRows) -> str:
    """How many seeds the chart's bars are the mean of: each trained model's own count where a seed has
    not got its results yet (`mean of 2 seeds`, or `Stage-tuned 1, Mix-tuned 2 of 2 seeds`)."""
    trained = [m for m in group.models if m in TRAINED]
    counts = {m: len(group.seeds_of.get(m, group.seeds)) for m in trained}
    if len(set(counts.values())) <= 1:
        n = next(iter(counts.values()), len(group.seeds))
        return f", mean of {n} seeds" if n > 1 else ""
    return (
        ", mean of " + ", ".join(f"{MODEL_LABELS[m]} {k}" for m, k in counts.items()) + f" of {len(group.seeds)} seeds"
    )


def row_key(label: str, model: str) -> str:
    """A table row's key: the group's label and the model's metrics key (`tiny-stage+mix-s*|mix`)."""
    return f"{label}|{model}"


class Row(NamedTuple):
    """One row of both tables."""

    key: str  # row_key(label, model), unique
    run: str  # the Run cell: the group's label on its first row, else empty
    model: str  # the metrics key (bio, stage, mix, qa, untrained, majority)
    fig1: list[str]  # the Figure 1 cells (Ave, Date, ...)
    fig5: list[str]  # the Figure 5 cells (BIO, QA in, QA out)
    seeds: str  # the Seeds cell: the seeds whose runs have this model's results
    group: int  # its group's index in the tables' groups


def table_rows(groups: list[GroupRows]) -> list[Row]:
    """Every row of both tables, in order."""
    out, seen = [], set()
    for i, g in enumerate(groups):
        for j, model in enumerate(g.models):
            seeds = ", ".join(map(str, g.seeds_of.get(model, sorted(g.seeds))))  # a seed still running: not yet
            key = row_key(g.label, model)
            if key in seen:  # two configurations under one label: rare, but keys must be unique
                key = f"{key}|{i}"
            seen.add(key)
            out.append(Row(key, g.label if j == 0 else "", model, g.fig1[model], g.fig5[model], seeds, i))
    return out
