"""The paper's two result tables from runs' metrics.json files, as rich tables.

- Figure 1: QA out-of-distribution exact match per attribute, and their average.
- Figure 5: BIO, QA in-distribution, QA out-of-distribution averages.
Runs of one configuration (same spec but the seed) are folded into one row group, shown as
mean ± std over seeds (population std, as numpy's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from jobs.runfolder import load_spec, read_metrics
from jobs.spec import ATTRIBUTES

# metrics key -> row label, in the paper's row order.
MODELS = {
    "majority": "Majority vote",
    "untrained": "Untrained",
    "bio": "BIO-tuned",
    "stage": "Stage-tuned",
    "mix": "Mix-tuned",
    "qa": "QA-only",
}
ATTRIBUTE_LABELS = {
    "birth_date": "Date", "birth_city": "City", "university": "Univ.",
    "job": "Job", "employer": "Employer", "blood_type": "Blood",
}
SET_LABELS = {"bio": "BIO", "qa_in": "QA in", "qa_out": "QA out"}


@dataclass
class Group:
    """Runs that differ only in their seed."""

    label: str
    seeds: list[int]
    metrics: list[dict]

    def values(self, model: str, eval_set: str, column: str) -> list[float]:
        return [m[model][eval_set][column] for m in self.metrics if model in m and eval_set in m[model]]


def load_groups(paths: list[Path]) -> list[Group]:
    members: dict[str, list] = {}
    for path in paths:
        spec = load_spec(path)
        members.setdefault(spec.config_hash(), []).append((path, spec))
    groups = []
    for runs in members.values():
        path, spec = runs[0]
        label = path.name if len(runs) == 1 else path.name.replace(f"-s{spec.seed}", "-s*", 1)
        groups.append(Group(label, [s.seed for _, s in runs], [read_metrics(p) for p, _ in runs]))
    return groups


def cell(values: list[float], expected: int) -> str:
    if not values:
        return "–"
    text = f"{np.mean(values):.1f}"
    if len(values) > 1:
        text += f" ± {np.std(values):.1f}"
    if len(values) < expected:
        text += f" (n={len(values)})"
    return text


def _models_present(group: Group) -> list[str]:
    return [m for m in MODELS if any(m in metrics for metrics in group.metrics)]


def _table(title: str, groups: list[Group]) -> Table:
    """One run: its name goes in the title; several: a Run column."""
    if len(groups) == 1:
        return Table(title=f"{title} · {_run_label(groups[0]).replace(chr(10), ' ')}", title_justify="left")
    table = Table(title=title, title_justify="left")
    table.add_column("Run")
    return table


def _row(groups: list[Group], group: Group, *cells: str) -> list[str]:
    return [*([_run_label(group)] if len(groups) > 1 else []), *cells]


def figure1(groups: list[Group]) -> Table:
    table = _table("Figure 1 · QA out-of-distribution exact match (%)", groups)
    table.add_column("Model", no_wrap=True)
    table.add_column("Ave", justify="right", style="bold")
    for a in ATTRIBUTES:
        table.add_column(ATTRIBUTE_LABELS[a], justify="right")
    for group in groups:
        for model in _models_present(group):
            n = len(group.metrics)
            row = [cell(group.values(model, "qa_out", c), n) for c in ("avg", *ATTRIBUTES)]
            table.add_row(*_row(groups, group, MODELS[model], *row))
        table.add_section()
    return table


def figure5(groups: list[Group]) -> Table:
    table = _table("Figure 5 · exact match (%)", groups)
    table.add_column("Model", no_wrap=True)
    for label in SET_LABELS.values():
        table.add_column(label, justify="right")
    for group in groups:
        for model in _models_present(group):
            n = len(group.metrics)
            table.add_row(*_row(groups, group, MODELS[model], *(cell(group.values(model, s, "avg"), n) for s in SET_LABELS)))
        table.add_section()
    return table


def training_table(groups: list[Group]) -> Table:
    table = _table("Training", groups)
    for name, justify in (("Phase", "left"), ("Steps", "right"), ("Tokens/s", "right"),
                          ("Train s", "right"), ("Final loss", "right")):
        table.add_column(name, justify=justify)
    for group in groups:
        phases = [p for p in MODELS if any(p in m.get("train", {}) for m in group.metrics)]
        for phase in phases:
            rows = [m["train"][phase] for m in group.metrics if phase in m.get("train", {})]
            reused = sorted({r["reused_from"] for r in rows if "reused_from" in r})
            label = phase + (f" (from {', '.join(reused)})" if reused else "")
            table.add_row(*_row(groups, group, label, str(rows[0]["steps"]),
                          f"{np.mean([r['tokens_per_s'] for r in rows]):,.0f}",
                          f"{np.mean([r['train_seconds'] for r in rows]):.0f}",
                          f"{np.mean([r['final_loss'] for r in rows]):.3f}"))
    return table


def _run_label(group: Group) -> str:
    if len(group.seeds) == 1:
        return group.label
    return f"{group.label}\n(seeds {', '.join(map(str, sorted(group.seeds)))})"


def tables(paths: list[Path]) -> list[Table]:
    groups = load_groups(paths)
    out = [figure1(groups), figure5(groups)]
    if any(m.get("train") for g in groups for m in g.metrics):
        out.append(training_table(groups))
    return out
