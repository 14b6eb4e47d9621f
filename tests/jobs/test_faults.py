"""Faults, for real: a `factrecall-jobs run` process SIGKILLed again and again, at a random moment
inside each step in turn (data, tokenizer, init, training, evaluation, dump), each time resumed, ends with
the very weights, metrics and activation store of an uninterrupted run; after every kill, no step is
marked done whose output is incomplete. Also: two jobs on one run folder (the second is refused), and
a probe command killed mid-sweep (its cache is never read half-written).

The jobs killed are forks of a process that has imported the job code (tests/forked.py): real
processes and real SIGKILLs, without 5 s of imports before each; the real full disk test starts its
job from the command line, as a user does."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import store
from jobs.run.events import read_events
from jobs.run.folder import read_metrics
from tests import forked
from tests.helpers import metrics, run_cli, wait_until

ARGS = ["run", "--preset", "tiny", "--strategy", "stage", "mix", "--no-reuse", "--set", "train.checkpoint_every=25"]


def _launch(workspace: Path, *extra: str) -> forked.Job:
    return forked.job(workspace, *ARGS, *extra)


@contextlib.contextmanager
def _launched(launch, workspace: Path) -> Iterator[forked.Job | subprocess.Popen]:
    """A job process that is never left behind: killed (if it still runs) and waited for on the way out."""
    proc = launch(workspace)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# (the step a kill aims at, the event of that step after which it comes). Every step announces its own
# start, so a kill point never depends on where an earlier kill happened to land.
KILL_POINTS = [
    ("data", "start"),
    ("tokenizer", "start"),
    ("init", "start"),
    ("eval-untrained", "start"),
    ("train-bio", "start"),
    ("train-bio", "progress"),
    ("eval-bio", "start"),
    ("train-stage", "start"),
    ("eval-stage", "start"),
    ("train-mix", "start"),
    ("train-mix", "progress"),
    ("eval-mix", "start"),
    ("dump", "start"),
    ("dump", "progress"),
]


def step_seconds(run: Path) -> dict[str, float]:
    """How long each step of a finished run took, from its own events (its start to its done marker):
    the window a kill aimed at that step is drawn from, so the kills follow the machine's speed."""
    starts, took = {}, {}
    for e in read_events(run):
        if e["kind"] == "start":
            starts[e["step"]] = e["time"]
        elif e["kind"] == "step" and e.get("status") == "done" and e["step"] in starts:
            took[e["step"]] = e["time"] - starts[e["step"]]
    return took


def _wait_for_event(events: Path, offset: int, kind: str, step: str, proc: subprocess.Popen) -> bool:
    """Wait until the job writes a `kind` event of `step` past `offset`; False if the job ends first."""

    def seen() -> str | None:
        if events.exists():
            with events.open("rb") as f:
                f.seek(offset)
                for line in f.read().splitlines():
                    try:
                        e = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if (e.get("kind"), e.get("step")) == (kind, step):
                        return "seen"
        return "ended" if proc.poll() is not None else None

    return wait_until(seen, f"a {kind} event of {step}", every=0.01) == "seen"


def _kill_at_random_moments(
    workspace: Path, run: Path, points, windows: dict[str, float], rng: random.Random, launch=_launch
) -> list[tuple[str, list[str]]]:
    """For each (step, event) in `points` whose step is not done yet: start the job, wait for that event,
    SIGKILL it at a random moment within the first 70% of the step's usual time (`windows`). Returns
    where each kill landed: the step aimed at and the steps then done."""
    killed = []
    for step, kind in points:
        if step in _done(run):
            continue  # an earlier kill's moment fell past it
        events = run / "events.jsonl"
        offset = events.stat().st_size if events.exists() else 0
        with _launched(launch, workspace) as proc:
            if not _wait_for_event(events, offset, kind, step, proc):
                continue  # the job ended first (it had nothing left to do)
            time.sleep(rng.uniform(0, 0.7 * windows[step]))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed.append((step, sorted(_done(run))))
    return killed


def _done(run: Path) -> set[str]:
    return {p.stem for p in (run / "done").glob("*.json")} if (run / "done").exists() else set()


def check_done_means_complete(run: Path, people: int = 16) -> None:
    """Every step marked done has its whole output."""
    done = _done(run)
    if "data" in done:
        for name in ("people.jsonl", "bio.jsonl", "prompts.jsonl"):
            assert (run / "data" / name).stat().st_size > 0
        assert len(lines := (run / "data" / "people.jsonl").read_text().splitlines()) == people
        assert all(json.loads(line) for line in lines)
    if "tokenizer" in done:
        assert len((run / "data" / "targets.jsonl").read_text().splitlines()) == people * 6
    if "init" in done:
        load_file(run / "checkpoints" / "init" / "model.safetensors")
    for phase in ("bio", "stage", "mix"):
        if f"train-{phase}" in done:
            assert load_file(run / "checkpoints" / phase / "final" / "model.safetensors")
        if f"eval-{phase}" in done:
            assert phase in read_metrics(run)
    if "eval-untrained" in done:
        assert "untrained" in read_metrics(run)
    if "dump" in done:
        assert store.open(run).complete()


def _only_run(workspace: Path) -> Path:
    (run,) = (workspace / "runs").iterdir()
    return run


def _weights(run: Path, phase: str) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / phase / "final" / "model.safetensors")


def _comparable(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    m.pop("train", None)
    for model in m.values():
        if isinstance(model, dict):
            model.pop("questions_per_s", None)
    return m


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The run of ARGS, never killed: what every killed and resumed run must end as."""
    reference = tmp_path_factory.mktemp("reference")
    assert run_cli("--workspace", reference, *ARGS) == 0
    return _only_run(reference)


def test_a_run_killed_at_random_moments_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
    ref = uninterrupted

    workspace = tmp_path / "killed"
    run = workspace / "runs" / ref.name
    rng, windows, killed_in = random.Random(20261125), step_seconds(ref), []
    for point in KILL_POINTS:  # after every kill, no step is marked done whose output is incomplete
        killed_in += _kill_at_random_moments(workspace, run, [point], windows, rng)
        check_done_means_complete(run)
    assert len(killed_in) >= 8, killed_in  # kills landed all along the run
    assert run_cli("--workspace", workspace, *ARGS) == 0  # the same command resumes it
    check_done_means_complete(run)

    for phase in ("bio", "stage", "mix"):
        a, b = _weights(ref, phase), _weights(run, phase)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), phase
    assert _comparable(metrics(ref)) == _comparable(metrics(run))
    s_ref, s_run = store.open(ref), store.open(run)
    assert s_run.complete() and s_run.models == s_ref.models
    for model in s_ref.models:
        for fmt in ("bio_long", "qa"):
            np.testing.assert_array_equal(
                s_run.acts(fmt, 1, "job", model=model), s_ref.acts(fmt, 1, "job", model=model)
            )


def test_two_jobs_on_one_run_folder_never_both_write(tmp_path, capsys):
    run = tmp_path / "runs"
    with _launched(lambda ws: _launch(ws, "--set", "train.bio.epochs=2000"), tmp_path) as first:
        wait_until(lambda: list(run.glob("*/checkpoints/init")), "the first job's init checkpoint")
        name = next(run.iterdir()).name
        assert run_cli("--workspace", tmp_path, *ARGS, "--set", "train.bio.epochs=2000") == 2
        assert f"run {name} is in use by pid {first.pid}" in capsys.readouterr().err
        assert run_cli("--workspace", tmp_path, "resume", name) == 2
        assert "is in use by pid" in capsys.readouterr().err


@pytest.mark.parametrize("moment", [0.2, 0.5, 0.9])
def test_a_probe_sweep_killed_midway_never_leaves_a_half_result(tiny_run, tmp_path, moment, capsys):
    """The probe command killed at a fraction of its usual time; the next one gives the numbers of
    an uninterrupted sweep (a half-written cache entry is not read back as a result)."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(tiny_run, ws / "runs" / tiny_run.name)
    argv = [
        "--workspace",
        str(ws),
        "probe",
        tiny_run.name,
        "--csv",
        str(tmp_path / "p.csv"),
        "--out",
        str(tmp_path / "p.png"),
    ]
    t0 = time.monotonic()
    full = forked.Job([*argv, "--no-cache"])
    assert full.wait() == 0
    reference = (tmp_path / "p.csv").read_text()
    took = time.monotonic() - t0
    shutil.rmtree(ws / "runs" / tiny_run.name / "activations.zarr" / "probes", ignore_errors=True)
    proc = forked.Job(argv)
    time.sleep(moment * took)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (tmp_path / "p.csv").unlink(missing_ok=True)
    assert run_cli(*argv) == 0
    assert (tmp_path / "p.csv").read_text() == reference


def test_a_full_disk_mid_checkpoint_keeps_the_previous_one_and_resume_finishes(tmp_path, monkeypatch, capsys):
    """The disk fills while the second checkpoint of a phase is written: one line, exit 1, the first
    checkpoint intact; once there is space the same command resumes from it to the uninterrupted
    weights."""
    import errno

    import jobs.run.train

    argv = ["run", "--preset", "tiny", "--strategy", "mix", "--no-dump", "--set", "train.checkpoint_every=25"]
    assert run_cli("--workspace", tmp_path / "whole", *argv) == 0
    real, calls = jobs.run.train.save_file, []

    def full_at_the_second(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(jobs.run.train, "save_file", full_at_the_second)
    assert run_cli("--workspace", tmp_path / "full", *argv) == 1
    err = capsys.readouterr().err
    assert "disk full writing" in err and "optimizer.safetensors" in err and len(err.strip().splitlines()) == 1
    run = _only_run(tmp_path / "full")
    last = run / "checkpoints" / "mix" / "last"
    assert json.loads((last / "state.json").read_text())["step"] == 25  # the first checkpoint, whole
    assert load_file(last / "model.safetensors") and "train-mix" not in _done(run)
    monkeypatch.setattr(jobs.run.train, "save_file", real)
    assert run_cli("--workspace", tmp_path / "full", *argv) == 0
    a = _weights(_only_run(tmp_path / "whole"), "mix")
    b = _weights(run, "mix")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: the real ENOSPC of a real filesystem. Needs root; elsewhere the simulated ENOSPC
    test above stands in."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip() or made.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_is_one_line_keeps_what_was_done_and_resumes_once_space_is_back(
    uninterrupted, small_disk, tmp_path
):
    """The disk fills while the run trains (another process takes the space: a run that could not
    fit at all is refused before it starts, by its size check): one line, exit 1, what was done is
    kept, and once there is space the same command finishes the run to the uninterrupted result."""
    ref = uninterrupted
    workspace = small_disk / "ws"
    filler = small_disk / "someone-elses.bin"
    with _launched(
        lambda ws: subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "--workspace", str(ws), *ARGS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ),
        workspace,
    ) as proc:
        wait_until(lambda: list(workspace.glob("runs/*/done/init.json")) or proc.poll() is not None, "the init step")
        with filler.open("wb") as f:  # all but 64 KB of what is left
            f.write(b"\0" * max(os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - (64 << 10), 0))
        proc.wait()
        assert proc.returncode == 1, proc.stderr.read()
        err = proc.stderr.read().strip()
    assert "disk full writing" in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    run = _only_run(workspace)
    check_done_means_complete(run)  # what was marked done is whole
    assert {"data", "tokenizer", "init"} <= _done(run) and "dump" not in _done(run)
    # Space comes back: the same command finishes the run, to the uninterrupted result.
    filler.unlink()
    assert run_cli("--workspace", workspace, *ARGS) == 0
    check_done_means_complete(run)
    for phase in ("bio", "stage", "mix"):
        a, b = _weights(ref, phase), _weights(run, phase)
        assert all(torch.equal(a[k], b[k]) for k in a), phase
    assert _comparable(metrics(ref)) == _comparable(metrics(run))


def test_data_and_tokenizer_steps_killed_at_random_moments_resume_to_the_same_files(tmp_path):
    """Data generation and the tokenizer's check of every prompt, with enough people to take a while
    (1,500: about 0.2 s and 3 s), each SIGKILLed at three random moments inside: the files they end
    with are byte for byte those of a run that was never killed."""
    args = ["run", "--preset", "tiny", "--people", "1500", "--strategy", "bio", "--no-dump"]

    def launch(workspace: Path) -> forked.Job:
        return forked.job(workspace, *args)

    def until_init(workspace: Path) -> Path:
        """Run until the init step is done (the model's first weights), then stop the job."""
        with _launched(launch, workspace) as proc:
            wait_until(
                lambda: list(workspace.glob("runs/*/done/init.json")) or proc.poll() is not None, "the init step"
            )
        return _only_run(workspace)

    reference = until_init(tmp_path / "reference")
    workspace = tmp_path / "killed"
    run = workspace / "runs" / reference.name
    killed = []
    rng, windows = random.Random(7), step_seconds(reference)
    for point in [("data", "start")] * 3 + [("tokenizer", "start")] * 3:
        killed += _kill_at_random_moments(workspace, run, [point], windows, rng, launch=launch)
        check_done_means_complete(run, people=1500)
    assert [s for s, _ in killed].count("tokenizer") >= 2 and len(killed) >= 4, killed
    run = until_init(workspace)
    for rel in (
        "data/people.jsonl",
        "data/bio.jsonl",
        "data/prompts.jsonl",
        "data/targets.jsonl",
        "checkpoints/init/model.safetensors",
    ):
        assert (run / rel).read_bytes() == (reference / rel).read_bytes(), rel
