"""A fixed workspace for the TUI's snapshot tests: the same files, numbers and times on every machine.

Runs of every status (three done seeds of the cpu preset, one failed, one stopped, one queued, one
new, one running with a live progress bar), with metrics.json written here rather than trained
(training on another CPU may differ in the last digit), and a small activation store whose vectors
are built so that every probe's answer is clear-cut: class prototypes far apart, and in the QA
vectors of QA-out people a share that points at another person's prototype, a share that grows
with the layer for Stage and shrinks for Mix. So the probes' numbers are exact on any machine.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np

from jobs.run.files import atomic_write_json
from jobs.run.spec import build_spec
from jobs.words import ATTRIBUTES, FORMATS

T0 = 1_795_000_000.0  # every time in the workspace counts from here
QA_OUT = {  # (stage, mix) QA-out exact match per attribute, seed 0; other seeds move by a little
    "birth_date": (84.0, 97.0),
    "birth_city": (36.0, 72.0),
    "university": (17.0, 64.0),
    "job": (10.0, 50.0),
    "employer": (5.0, 45.0),
    "blood_type": (20.0, 33.0),
}


def _table(values: dict[str, float]) -> dict[str, float]:
    return {"avg": round(float(np.mean(list(values.values()))), 2), **values}


def _metrics(seed: int) -> dict:
    shift = (seed - 1) * 1.5
    stage_out = {a: round(v[0] + shift, 2) for a, v in QA_OUT.items()}
    mix_out = {a: round(v[1] - shift, 2) for a, v in QA_OUT.items()}
    full = {a: 100.0 for a in ATTRIBUTES}
    return {
        "majority": {s: _table({a: 12.5 for a in ATTRIBUTES}) for s in ("bio", "qa_in", "qa_out")},
        "untrained": {s: _table({a: 0.0 for a in ATTRIBUTES}) for s in ("bio", "qa_in", "qa_out")},
        "bio": {
            "bio": _table(full),
            "qa_in": _table({a: 1.0 for a in ATTRIBUTES}),
            "qa_out": _table({a: 1.0 for a in ATTRIBUTES}),
        },
        "stage": {
            "bio": _table({a: 98.0 - seed for a in ATTRIBUTES}),
            "qa_in": _table(full),
            "qa_out": _table(stage_out),
        },
        "mix": {"bio": _table(full), "qa_in": _table(full), "qa_out": _table(mix_out)},
    }


def _run(ws: Path, name: str, strategies: tuple[str, ...], seed: int, age: float, preset: str = "cpu") -> Path:
    run = ws / "runs" / name
    spec = build_spec(preset, strategies=strategies, seed=seed)
    atomic_write_json(run / "spec.json", spec.model_dump(mode="json"))
    os.utime(run / "spec.json", (T0 - age, T0 - age))  # newest first is the table's order
    return run


def _events(run: Path, *events: dict) -> None:
    with (run / "events.jsonl").open("a") as f:
        for i, e in enumerate(events):
            f.write(json.dumps({"time": T0 + i, **e}) + "\n")


def _done(run: Path, *steps: str) -> None:
    for step in steps:
        atomic_write_json(run / "done" / f"{step}.json", {"step": step, "time": T0})


def _store(run: Path, people: int = 40, layers: int = 3, hidden: int = 16) -> None:
    from store.layout import Layout
    from store.writer import Writer

    rng = np.random.default_rng(0)
    n_in = people * 4 // 5
    split = np.array(["qa_in"] * n_in + ["qa_out"] * (people - n_in))
    classes = 4
    label = np.stack([(np.arange(people) + a) % classes for a in range(len(ATTRIBUTES))])  # (attribute, person)
    prototypes = rng.normal(size=(len(ATTRIBUTES), classes, hidden)) * 10
    models = ("untrained", "bio", "stage", "mix")
    layout = Layout(
        models=models,
        formats=FORMATS,
        attributes=ATTRIBUTES,
        layers=layers,
        hidden=hidden,
        people=np.arange(people),
        split=split,
        label=label + 10,
        label_text=np.vectorize(lambda i: f"tok{i}")(label),
        answer=np.vectorize(lambda i: f"answer {i}")(label),
        dtype="float32",
        source={"fixture": "tests/tui/workspace.py"},
    )
    meta = {"run": run.name, "created": "2026-11-25T00:00:00+0000", "model_type": "llama", "vocab_size": 64}
    writer = Writer.open_or_create(run / "activations.zarr", layout, meta)
    out_people = np.flatnonzero(split == "qa_out")
    for model in models:
        for fmt in FORMATS:
            v = np.empty((layers, len(ATTRIBUTES), people, hidden), dtype=np.float32)
            for layer in range(layers):
                for a in range(len(ATTRIBUTES)):
                    shown = label[a].copy()
                    if fmt == "qa" and model in ("stage", "mix"):
                        wrong = {"stage": layer + 2, "mix": max(0, 3 - layer)}[model]  # of 8 QA-out people
                        shown[out_people[:wrong]] = (shown[out_people[:wrong]] + 1) % classes
                    v[layer, a] = prototypes[a, shown] + rng.normal(size=(people, hidden)) * 0.1
            for block in range(layout.blocks):
                writer.write(model, fmt, block, v[:, :, writer.people(block)])


def fixed_workspace(ws: Path) -> Path:
    """Build it under `ws` (which must not exist) and return `ws`."""
    for seed in (0, 1, 2):
        run = _run(ws, f"cpu-stage+mix-s{seed}", ("stage", "mix"), seed, age=100 + seed)
        atomic_write_json(run / "metrics.json", _metrics(seed))
        _events(
            run,
            {"kind": "run", "status": "running", "phases": ["bio", "stage", "mix"]},
            {"kind": "run", "status": "done"},
        )
        _done(
            run,
            "data",
            "tokenizer",
            "init",
            "eval-untrained",
            "train-bio",
            "eval-bio",
            "train-stage",
            "eval-stage",
            "train-mix",
            "eval-mix",
            "dump",
        )
    _store(ws / "runs" / "cpu-stage+mix-s0")
    failed = _run(ws, "tiny-mix-s0", ("mix",), 0, age=50, preset="tiny")
    _events(
        failed,
        {"kind": "run", "status": "running", "phases": ["mix"]},
        {"kind": "run", "status": "failed", "error": "an example has 301 tokens, more than train.row_len=288"},
    )
    _done(failed, "data")
    stopped = _run(ws, "tiny-stage-s0", ("stage",), 0, age=40, preset="tiny")
    _events(
        stopped,
        {"kind": "run", "status": "running", "phases": ["bio", "stage"]},
        {"kind": "start", "step": "train-bio", "total": 400},
        {"kind": "progress", "step": "train-bio", "done": 120, "total": 400, "eta_s": 84.0},
    )
    _done(stopped, "data", "tokenizer", "init", "eval-untrained")
    _run(ws, "tiny-bio-s0", ("bio",), 0, age=30, preset="tiny")
    atomic_write_json(
        ws / "queue" / "1795000000000000000-tiny-bio-s0.json",
        {"run": "tiny-bio-s0", "device": None, "dump": True, "reuse": True, "time": T0},
    )
    _run(ws, "tiny-qa-s0", ("qa",), 0, age=20, preset="tiny")
    running = _run(ws, "tiny-stage+mix-s1", ("stage", "mix"), 1, age=10, preset="tiny")
    _events(
        running,
        {"kind": "run", "status": "running", "phases": ["bio", "stage", "mix"]},
        {"kind": "start", "step": "train-mix", "total": 300},
        {"kind": "progress", "step": "train-mix", "done": 150, "total": 300, "eta_s": 192.0},
    )
    _done(running, "data", "tokenizer", "init", "eval-untrained", "train-bio", "eval-bio", "train-stage", "eval-stage")
    return ws


def hold(run: Path, pid: int = 4242) -> int:
    """Hold `run` as a job would (its run.lock, flock'd by this process): it shows as running, with
    `pid` written in the lock (a fixed number, so that snapshots do not change). Returns the
    descriptor; os.close releases it."""
    fd = os.open(run / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, str(pid).encode())
    return fd
