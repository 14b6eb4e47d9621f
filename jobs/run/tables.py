"""The paper's two result tables from runs' metrics.json files, as rich tables.

- Figure 1: QA out-of-distribution exact match per attribute, and their average.
- Figure 5: BIO, QA in-distribution, QA out-of-distribution averages.
- A comparison of many runs (a sweep): one row per trained model, with the settings that differ
  between the runs as columns (`comparison`, as a rich table or markdown).
Runs of one configuration (same spec but the seed) are folded into one row group, shown as
mean ± std over seeds (population std, as numpy's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from jobs.run.folder import load_spec, read_metrics
from jobs.run.spec import ExperimentSpec
from jobs.words import ATTRIBUTE_LABELS, ATTRIBUTES, CHAINS, MODEL_LABELS, PHASE_SETTINGS, SET_LABELS


@dataclass
class Group:
    """Runs that differ only in their seed."""

    label: str
    seeds: list[int]
    metrics: list[dict]
    spec: ExperimentSpec  # the first run's; the others differ only in the seed
    paths: list[Path]  # the run folders, in the order of `seeds`

    def values(self, model: str, eval_set: str, column: str) -> list[float]:
        return [m[model][eval_set][column] for m in self.metrics if model in m and eval_set in m[model]]


def load_groups(paths: list[Path], specs: dict[Path, ExperimentSpec] | None = None) -> list[Group]:
    """Runs grouped by configuration (the spec without its seed), in the order of `paths` (their
    specs read from the folders, or taken from `specs`). A run whose seed its configuration's group
    already holds (the same experiment run twice under two names) starts a group of its own rather
    than pass for another seed."""
    members: dict[tuple[str, int], list] = {}
    seeds: dict[tuple[str, int], set[int]] = {}
    for path in paths:
        spec = specs[path] if specs is not None and path in specs else load_spec(path)
        config, copy = spec.config_hash(), 0
        while spec.seed in seeds.get((config, copy), ()):
            copy += 1
        members.setdefault((config, copy), []).append((path, spec))
        seeds.setdefault((config, copy), set()).add(spec.seed)
    groups = []
    for runs in members.values():
        path, spec = runs[0]
        label = path.name if len(runs) == 1 else path.name.replace(f"-s{spec.seed}", "-s*", 1)
        groups.append(
            Group(label, [s.seed for _, s in runs], [read_metrics(p) for p, _ in runs], spec, [p for p, _ in runs])
        )
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
    return [m for m in MODEL_LABELS if any(m in metrics for metrics in group.metrics)]


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
            table.add_row(*_row(groups, group, MODEL_LABELS[model], *row))
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
            table.add_row(
                *_row(groups, group, MODEL_LABELS[model], *(cell(group.values(model, s, "avg"), n) for s in SET_LABELS))
            )
        table.add_section()
    return table


def training_table(groups: list[Group]) -> Table:
    table = _table("Training", groups)
    for name, justify in (
        ("Phase", "left"),
        ("Steps", "right"),
        ("Tokens/s", "right"),
        ("Train s", "right"),
        ("Final loss", "right"),
    ):
        table.add_column(name, justify=justify)
    for group in groups:
        phases = [p for p in MODEL_LABELS if any(p in m.get("train", {}) for m in group.metrics)]
        for phase in phases:
            rows = [m["train"][phase] for m in group.metrics if phase in m.get("train", {})]
            reused = sorted({r["reused_from"] for r in rows if "reused_from" in r})
            label = phase + (f" (from {', '.join(reused)})" if reused else "")
            table.add_row(
                *_row(
                    groups,
                    group,
                    label,
                    str(rows[0]["steps"]),
                    f"{np.mean([r['tokens_per_s'] for r in rows]):,.0f}",
                    f"{np.mean([r['train_seconds'] for r in rows]):.0f}",
                    f"{np.mean([r['final_loss'] for r in rows]):.3f}",
                )
            )
    return table


def _run_label(group: Group) -> str:
    if len(group.seeds) == 1:
        return group.label
    return f"{group.label}\n(seeds {', '.join(map(str, sorted(group.seeds)))})"


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _setting(value: object) -> str:
    if isinstance(value, list):
        return "+".join(map(str, value))
    if isinstance(value, float):
        short = f"{value:g}"  # 40.0 -> 40, 0.0003 -> 0.0003; exact when it round-trips
        return short if float(short) == value else repr(value)
    return "–" if value is None else str(value)


def comparison(paths: list[Path], models: tuple[str, ...] = tuple(CHAINS)) -> tuple[list[str], list[list[str]]]:
    """(header, rows) comparing runs: one row per configuration (runs differing only in seed are
    one, mean ± std) and trained model, in the order of `paths`. Columns: the run, every setting
    that differs between the configurations, the model, BIO / QA in / QA out, QA out per
    attribute, and the seconds its phases trained (Stage: BIO phase + QA phase)."""
    # Only runs with a model to show have a say in which settings differ.
    groups = [g for g in load_groups(paths) if any(m in metrics for m in models for metrics in g.metrics)]
    shown_phases = {phase for m in models for phase in CHAINS[m]}
    flat = []
    for group in groups:
        ident = group.spec.identity()
        for key in ("seed", "strategies"):
            ident.pop(key)
        # The settings of a phase not trained, or not behind a model shown, are not a difference
        # (a Stage-only run's mix.*; qa.* when only Mix is shown).
        trained = {PHASE_SETTINGS[p.name] for p in group.spec.phases() if p.name in shown_phases}
        for settings in set(PHASE_SETTINGS.values()) - trained:
            ident["train"].pop(settings)
        flat.append(_flatten(ident))
    keys = sorted({k for f in flat for k in f}, key=lambda k: (k.split(".")[0] != "data", k))
    differing = [k for k in keys if len({_setting(f[k]) for f in flat if k in f}) > 1]
    header = [
        "Run",
        *(k.removeprefix("train.") for k in differing),
        "Model",
        *SET_LABELS.values(),
        *(f"out {ATTRIBUTE_LABELS[a]}" for a in ATTRIBUTES),
        "Train s",
        "Seeds",
    ]
    rows = []
    for group, settings in zip(groups, flat):
        for model in (m for m in models if any(m in metrics for metrics in group.metrics)):
            n = len(group.metrics)
            seconds = [
                sum(m["train"][p]["train_seconds"] for p in CHAINS[model])
                for m in group.metrics
                if all(p in m.get("train", {}) for p in CHAINS[model])
            ]
            rows.append(
                [
                    group.label,
                    *(_setting(settings[k]) if k in settings else "·" for k in differing),
                    MODEL_LABELS[model],
                    *(cell(group.values(model, s, "avg"), n) for s in SET_LABELS),
                    *(cell(group.values(model, "qa_out", a), n) for a in ATTRIBUTES),
                    _seconds(seconds, n),
                    str(n),
                ]
            )
    return header, rows


def _seconds(seconds: list[float], runs: int) -> str:
    if not seconds:
        return "–"
    return f"{np.mean(seconds):.0f}" + (f" (n={len(seconds)})" if len(seconds) < runs else "")


def comparison_table(paths: list[Path], models: tuple[str, ...] = tuple(CHAINS)) -> Table:
    header, rows = comparison(paths, models)
    table = Table(title="Runs compared · exact match (%)", title_justify="left")
    for name in header:
        table.add_column(name, justify="left" if name in ("Run", "Model") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def comparison_markdown(paths: list[Path], models: tuple[str, ...] = tuple(CHAINS)) -> str:
    header, rows = comparison(paths, models)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]
    return "\n".join(lines) + "\n"


def tables(paths: list[Path]) -> list[Table]:
    groups = load_groups(paths)
    out = [figure1(groups), figure5(groups)]
    if any(m.get("train") for g in groups for m in g.metrics):
        out.append(training_table(groups))
    return out


def strategy_curve(metrics: dict, strategy: str) -> tuple[np.ndarray, dict[str, np.ndarray], int | None] | None:
    """(steps, {set: accuracy}, step where the last phase starts or None) for one run, starting at
    step 0 from the untrained model; None when the run did not train that strategy or logged no curve."""
    train = metrics.get("train", {})
    chain = CHAINS[strategy]
    if any(not train.get(phase, {}).get("curve") for phase in chain):
        return None
    untrained = metrics.get("untrained", {})
    points = [(0, {s: untrained.get(s, {}).get("avg", 0.0) for s in SET_LABELS})]
    offset, switch = 0, None
    for phase in chain:
        if offset:
            switch = offset
        points += [(offset + p["step"], {s: p[s] for s in SET_LABELS}) for p in train[phase]["curve"]]
        offset += train[phase]["steps"]
    steps = np.array([s for s, _ in points])
    return steps, {s: np.array([v[s] for _, v in points]) for s in SET_LABELS}, switch


def group_curves(metrics: list[dict]) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray], int | None]]:
    """The training curves of one configuration's seeds (their metrics), per strategy that logged one:
    (steps, {set: seeds × steps accuracies}, step where the last phase starts or None), cut to the
    shortest seed. BIO is left out where Stage is there: Stage's curve begins with its BIO phase. What
    `factrecall-jobs plot` draws, and the app's Accuracy curves."""
    out = {}
    for strategy in CHAINS:
        runs = [c for m in metrics if (c := strategy_curve(m, strategy)) is not None]
        if not runs or (strategy == "bio" and any(strategy_curve(m, "stage") for m in metrics)):
            continue
        length = min(len(r[0]) for r in runs)
        out[strategy] = (
            runs[0][0][:length],
            {s: np.array([r[1][s][:length] for r in runs]) for s in SET_LABELS},
            runs[0][2],
        )
    return out
