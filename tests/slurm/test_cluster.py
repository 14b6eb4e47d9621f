"""The Slurm executor against a real Slurm: the one-node cluster `tests/slurm/cluster.sh up` stands up
on this machine (slurmctld, slurmd, munge, slurmdbd so that sacct answers). Real sbatch, squeue,
sacct, scancel and scontrol; the runs train on the node as they would on a cluster's.

Each test is driven the way a user would (`submit`, `status`, the TUI, `cancel`, `reproduce`), and only
two things are done by hand, as a cluster's admin could: a job's time limit is shortened once its run is
training, and Slurm's hold of a requeued job (about 2 minutes, BeginTime) is lifted. Where a test needs
a run to still be training at some moment whatever the machine's speed, it pauses the run's process
(SIGSTOP) and lets it go on (SIGCONT): the node is this machine.

Skipped, with one line, where no cluster answers; `FACTRECALL_REQUIRE_SLURM=1` (set by .ci/run once it
started the cluster) makes that a failure instead."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import jobs.launch.slurm as slurm
from jobs.launch.queue import job_table
from jobs.run.events import read_events
from jobs.run.folder import live_pid
from tests.helpers import metrics, run_cli, wait_until

pytest.importorskip("submitit")
pytestmark = pytest.mark.slurm

# A tiny run whose training is long enough to act on while it trains, written out often.
TINY = ("--preset", "tiny", "--strategy", "bio", "--set", "train.checkpoint_every=100000")


UP = {"idle", "mix", "alloc", "comp", "plnd"}  # sinfo's short states of a node that takes jobs (comp: finishing one)


def _answers() -> str | None:
    """Why no cluster can be used here, or None when one answers."""
    if shutil.which("sinfo") is None:
        return "no sinfo on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t|%N"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo: {err}"
    states = [line.split("|") for line in out.stdout.split()]
    if out.returncode != 0 or not any(s.rstrip("*~#!%$@^-") in UP for s, _ in states):
        return (out.stderr.strip().splitlines() or [f"no node up ({out.stdout.strip()})"])[-1]
    if not any(node == socket.gethostname().split(".")[0] for _, node in states):
        return "the cluster's node is not this machine (the tests pause the runs' processes)"
    return None


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A workspace whose jobs go to the real cluster; every job it submitted is scancelled at the end."""
    why = _answers()
    if why is not None:
        if os.environ.get("FACTRECALL_REQUIRE_SLURM") == "1":
            pytest.fail(f"no Slurm cluster answers ({why}), and FACTRECALL_REQUIRE_SLURM=1")
        pytest.skip(f"no Slurm cluster answers here ({why}); `sudo bash tests/slurm/cluster.sh up` starts one")
    monkeypatch.delenv("FACTRECALL_SUBMITIT_CLUSTER", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs inherit it: one thread, as the local twin has
    monkeypatch.setattr(slurm, "STATE_TTL_S", 1.0)  # the test follows state changes without 30 s of cache
    slurm._states.clear()
    ws = tmp_path / "ws"
    yield ws
    for entry in slurm.entries(ws):
        subprocess.run(["scancel", entry["job_id"]], capture_output=True, check=False)
        pid = live_pid(ws / "runs" / entry["run"])
        if pid:  # a run paused by the test and left so by a failed assertion
            os.kill(pid, signal.SIGCONT)


def _cli(ws: Path, *args: str) -> int:
    return run_cli("--workspace", ws, *args)


def _job(ws: Path, run: str) -> str:
    return slurm.job_of(ws, run)["job_id"]


def _squeue(job: str) -> tuple[str, str]:
    """(state, reason) as the controller says them now; ("", "") once it no longer lists the job."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%i|%T|%r"], capture_output=True, text=True)
    for line in out.stdout.split():
        jid, state, reason = line.split("|")
        if jid == job:
            return state, reason
    return "", ""


FAILED_STATES = {"FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _node_state() -> str:
    """sinfo's short state of this machine's node (the fixture checked the cluster's node is this host)."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
    return out[0].rstrip("*~#!%$@^-") if out else ""


def _sacct(job: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job], capture_output=True, text=True)
    rows = [line.split("|") for line in out.stdout.split("\n") if line.startswith(job + "|")]
    return rows[-1][1].split()[0] if rows else ""


def _row(ws: Path, run: str) -> dict | None:
    return next((r for r in job_table(ws) if r["run"] == run), None)


def _progress_events(folder: Path) -> int:
    return sum(1 for e in read_events(folder) if e.get("kind") == "progress")


def _runs(folder: Path) -> list[str]:
    return [e["status"] for e in read_events(folder) if e.get("kind") == "run"]


def _steps(folder: Path, step: str = "train-bio") -> list[int]:
    return [e["done"] for e in read_events(folder) if e.get("kind") == "progress" and e.get("step") == step]


def _pause(folder: Path, training: str | None = None) -> int:
    """Stop the process holding the run folder (SIGSTOP); with `training`, check that it was stopped
    mid-way through that step: a test starved of CPU may look again only after the run has gone past
    the point it waited for, and must say so rather than fail later for a reason that hides it."""
    pid = wait_until(lambda: (p := live_pid(folder)) is not None and p > 0 and p, f"{folder.name}'s process")
    os.kill(pid, signal.SIGSTOP)
    if training is not None:
        last = [e for e in read_events(folder) if e.get("kind") == "progress" and e.get("step") == training][-1]
        assert last["done"] < last["total"], (
            f"{folder.name} had finished {training} ({last['done']} of {last['total']} steps) before this "
            "test, slowed by a loaded machine, could pause it"
        )
    return pid


def test_an_array_is_followed_cancelled_while_pending_and_while_running_and_resumed(cluster, capsys):
    """Three runs as one array job, each asking for both CPUs of the node, so one runs and two wait.
    `status` and the TUI follow the running one past the point where its `running` event lies more
    than 64 KB back in events.jsonl; a pending one is scancelled; the running one is stopped
    gracefully (its finished steps kept, the Slurm job COMPLETED, not FAILED) and a second `submit`
    resumes it to the end; the third runs queued -> running -> done."""
    from tests.jobs.test_slurm import _jobs_tab_says

    ws = cluster
    rest = ("--cpus", "2", "--time", "30", "--set", "train.bio.epochs=150", "--set", "train.eval_every=2")
    assert _cli(ws, "submit", *TINY, "--seeds", "0", "1", "2", *rest, "--executor", "slurm") == 0
    out = capsys.readouterr().out
    assert "partition debug has no GPUs: each job asks for 0" in out  # not refused for the default --gpus
    names = sorted(e["run"] for e in slurm.entries(ws))  # tiny-bio-s0-<hash of the settings>, s1, s2
    assert len(names) == 3
    jobs = {name: _job(ws, name) for name in names}
    assert {j.split("_")[0] for j in jobs.values()} == {jobs[names[0]].split("_")[0]}  # one array job
    first = wait_until(lambda: next((n for n in names if _squeue(jobs[n])[0] == "RUNNING"), None), "a task to run")
    waiting = [n for n in names if n != first]
    third, pending = waiting
    subprocess.run(["scontrol", "hold", jobs[third]], check=True, capture_output=True)  # until the test lets it go
    assert all(_row(ws, n)["status"] == "queued" for n in waiting)

    # The running one, past 70 progress events and 64 KB of events: paused there, so that it is still
    # running whatever this machine's speed.
    folder = ws / "runs" / first
    wait_until(
        lambda: _progress_events(folder) > 70 and (folder / "events.jsonl").stat().st_size > 65536,
        "70 progress events and 64 KB of them",
    )
    child = _pause(folder, "train-bio")
    row = _row(ws, first)
    assert row["status"] == "running" and row["executor"] == "slurm" and row["progress"].startswith("train-bio ")
    _jobs_tab_says(ws, first, f"Slurm job {jobs[first]}")

    # Cancel a pending one: scancelled, recorded as interrupted, gone from `status`.
    assert _cli(ws, "cancel", pending) == 0
    assert f"slurm job {jobs[pending]} cancelled before it started" in capsys.readouterr().out
    # (A task cancelled before the array split it off leaves no record of its own, in squeue or sacct.)
    wait_until(lambda: _squeue(jobs[pending])[0] in ("", "CANCELLED"), "Slurm to drop it")
    assert _sacct(jobs[pending]) in ("", "CANCELLED")
    assert _runs(ws / "runs" / pending) == ["interrupted"] and _row(ws, pending) is None

    # Cancel the running one: it saves and stops; its Slurm job ends without an error.
    assert _cli(ws, "cancel", first) == 0
    assert f"{first}: stopping (slurm job {jobs[first]}); what it finished is kept" in capsys.readouterr().out
    # The task takes the request (it polls twice a second) and signals its child, stopped still: the
    # signal waits for the child, which then stops at its next step whatever this machine's speed.
    wait_until(lambda: not (slurm.slurm_dir(ws) / "cancel" / f"{first}.json").exists(), "the task to take the cancel")
    os.kill(child, signal.SIGCONT)
    wait_until(lambda: _runs(folder)[-1] == "interrupted", "the run to stop")
    stopped_at, reported = _steps(folder)[-1], len(_steps(folder))  # (progress is reported twice a second)
    state = json.loads((folder / "checkpoints" / "bio" / "last" / "state.json").read_text())
    assert state["step"] >= stopped_at > 0  # saved where it stopped (no periodic checkpoint this far)
    stopped_at = state["step"]
    assert (
        wait_until(
            lambda: (state := _sacct(jobs[first])) not in ("", "PENDING", "RUNNING", "COMPLETING") and state,
            "the Slurm job to end",
        )
        == "COMPLETED"
    )
    wait_until(lambda: _row(ws, first) is None, f"{first} to leave `status`")

    # The third, held so far: queued, then (let go) running, paused there to be seen so, then done.
    assert _row(ws, third)["status"] == "queued"
    _jobs_tab_says(ws, third, f"Slurm job {jobs[third]}, waiting for the scheduler")
    subprocess.run(["scontrol", "release", jobs[third]], check=True, capture_output=True)
    wait_until(lambda: (row := _row(ws, third)) and row["status"] == "running" and row["progress"], f"{third} running")
    child = _pause(ws / "runs" / third)
    assert _row(ws, third)["status"] == "running" and _row(ws, third)["progress"]
    _jobs_tab_says(ws, third, f"Slurm job {jobs[third]}")
    os.kill(child, signal.SIGCONT)
    wait_until(lambda: _runs(ws / "runs" / third)[-1:] == ["done"], f"{third} to finish")
    wait_until(lambda: _row(ws, third) is None, f"{third} to leave `status`")

    # A second submit of the stopped run resumes it from its checkpoint to the end.
    seed = re.search(r"-s(\d+)", first).group(1)
    assert _cli(ws, "submit", *TINY, "--seeds", seed, *rest, "--executor", "slurm") == 0
    wait_until(lambda: _runs(folder)[-1] == "done", f"{first} to finish")
    resumed = _steps(folder)[reported:]
    assert resumed and resumed[0] > stopped_at  # on from the step it saved, not from the start
    assert metrics(folder)["train"]["bio"]["steps"] == resumed[-1]
    assert "resuming" in (folder / "job.out").read_text()


def _log_of(ws: Path, run: str) -> str:
    """submitit's log of the run's task (stdout and stderr)."""
    info = slurm.job_of(ws, run)
    paths = [Path(info["log"]), Path(info["log"]).with_suffix(".err")]
    return "".join(p.read_text() for p in paths if p.exists())


def test_a_run_past_its_time_limit_is_saved_requeued_resumed_and_ends_as_the_same_run_done_here(cluster, capsys):
    """A time limit that falls mid-training: Slurm warns the job (USR2, 120 s before, at its next
    check), the run saves where it is, submitit requeues the task, and the task resumes the run from
    that checkpoint to the end, with weights byte-identical, and metrics equal, to the same run done
    here without a stop. The limit is shortened by hand once the run trains (scontrol update
    TimeLimit), and the run is paused until the warning has come, so that the warning falls
    mid-training on a machine of any speed; Slurm's ~2 min hold of the requeued job is lifted."""
    ws = cluster
    settings = (*TINY, "--seed", "0", "--set", "train.bio.epochs=200")
    assert _cli(ws, "submit", *settings, "--executor", "slurm", "--time", "30") == 0
    [run] = [e["run"] for e in slurm.entries(ws)]
    job, folder = _job(ws, run), ws / "runs" / run
    timeline = {"submitted": time.time()}
    wait_until(lambda: _steps(folder), "training to start")  # paused at once: still training on any machine
    child = _pause(folder, "train-bio")
    timeline["paused"] = time.time()
    elapsed = wait_until(lambda: _elapsed(job), "the job's elapsed time")
    # A limit 1-2 minutes from now: inside the warning's 120 s (Slurm checks every 30 s).
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={elapsed // 60 + 2}"], check=True)
    wait_until(lambda: "Caught signal SIGUSR2" in _log_of(ws, run), "Slurm's warning")
    timeline["warned"] = time.time()
    os.kill(child, signal.SIGCONT)
    wait_until(lambda: _squeue(job) == ("PENDING", "BeginTime"), "the requeued job's hold")
    timeline["requeued"] = time.time()
    at = [e for e in read_events(folder) if e.get("kind") == "run"][-1]
    assert at["status"] == "interrupted" and (folder / "checkpoints" / "bio" / "last" / "state.json").exists()
    saved = json.loads((folder / "checkpoints" / "bio" / "last" / "state.json").read_text())["step"]
    # progress is reported twice a second: the save may be a step or two past the last report
    assert saved >= _steps(folder)[-1] > 0  # saved at the warning, where it was (no periodic checkpoint)
    timeline["saved"] = at["time"]
    assert _row(ws, run)["status"] == "queued"  # during the hold: still queued, so no second study starts
    # The hold is lifted once the node is idle again and a couple of seconds after the requeue: slurmd
    # revokes the requeued job's credential, at one-second resolution, and a restart within that
    # second is killed as "Job credential revoked" (CI's loaded cores met it: the job FAILED at once).
    # Slurm's own ~2-minute hold exists to avoid exactly this.
    wait_until(lambda: _node_state() == "idle" and time.time() - timeline["requeued"] > 2, "the node to be idle")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now", "TimeLimit=30"], check=True)

    # Meanwhile, the same run here, start to end.
    assert _cli(ws, "run", *settings, "--name", "here") == 0
    ended = wait_until(
        lambda: _runs(folder)[-1] == "done" or _sacct(job) in FAILED_STATES, "the requeued run to finish"
    )
    assert _runs(folder)[-1] == "done", f"Slurm ended job {job} as {_sacct(job)} (`sacct -j {job}`), not done: {ended}"
    timeline["resumed"] = next(
        e["time"] for e in read_events(folder) if e.get("kind") == "run" and e["time"] > at["time"]
    )
    timeline["finished"] = [e for e in read_events(folder) if e.get("kind") == "run"][-1]["time"]
    assert _runs(folder) == ["running", "interrupted", "running", "done"]
    resumed = [
        e["done"]
        for e in read_events(folder)
        if e.get("kind") == "progress" and e.get("step") == "train-bio" and e["time"] > at["time"]
    ]
    assert resumed and resumed[0] > saved  # resumed from the step it saved (a resumed phase reports at once)
    assert "Requeued job" in _log_of(ws, run)
    here = ws / "runs" / "here"
    for name in ("model.safetensors",):
        a, b = (f / "checkpoints" / "bio" / "final" / name for f in (folder, here))
        assert a.read_bytes() == b.read_bytes()
    ta, tb = (load_file(f / "checkpoints" / "bio" / "final" / "model.safetensors") for f in (folder, here))
    assert all(np.array_equal(ta[k].float().numpy(), tb[k].float().numpy()) for k in ta)
    ma, mb = metrics(folder), metrics(here)
    for model in ("untrained", "bio"):  # every score (its speed aside)
        assert {k: v for k, v in ma[model].items() if not k.endswith("_per_s")} == {
            k: v for k, v in mb[model].items() if not k.endswith("_per_s")
        }, model
    assert ma["train"]["bio"]["curve"] == mb["train"]["bio"]["curve"]
    assert ma["train"]["bio"]["steps"] == mb["train"]["bio"]["steps"]
    assert (
        wait_until(
            lambda: (state := _sacct(job)) not in ("", "PENDING", "RUNNING", "COMPLETING", "REQUEUED") and state,
            "the Slurm job to end",
        )
        == "COMPLETED"
    )
    t0 = timeline["submitted"]
    print(
        "requeue timeline (s from submit): "
        + ", ".join(f"{k} {v - t0:.1f}" for k, v in sorted(timeline.items(), key=lambda kv: kv[1]))
    )


def _elapsed(job: str) -> int | None:
    """Seconds the job has run, as squeue says it (M:SS, H:MM:SS or D-H:MM:SS)."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True).stdout.strip()
    if not out:
        return None
    days, _, clock = out.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return seconds + int(days or 0) * 86400 or 1


def test_reproduce_goes_to_slurm_and_a_second_reproduce_writes_the_report(cluster, capsys):
    """`reproduce --executor slurm`: the study's runs go to Slurm as one array; while they are queued
    or running, reproduce here refuses to train them beside them; once they are done, the same
    command fits the probes and writes the report."""
    ws = cluster
    study = (
        "reproduce",
        "--preset",
        "tiny",
        "--seeds",
        "0",
        "--snapshots",
        "0",
        "--set",
        "train.bio.epochs=20",
        "--set",
        "train.mix.epochs=20",
        "--set",
        "train.qa.epochs=5",
    )
    assert _cli(ws, *study, "--executor", "slurm") == 0
    out = capsys.readouterr().out
    assert "submitted reproduce-tiny-s0" in out and "fits the probes" in out
    [run] = [e["run"] for e in slurm.entries(ws)]
    assert _cli(ws, *study) == 2
    assert "queued or running" in capsys.readouterr().err
    wait_until(lambda: _runs(ws / "runs" / run)[-1:] == ["done"], "the study's run to finish")
    wait_until(lambda: _row(ws, run) is None, "the run to leave `status`")
    assert _cli(ws, *study) == 0
    out = capsys.readouterr().out
    report = next(ws.glob("reproduce/*/report.md"))
    assert "(1)" in out and report.exists() and "reproduce-tiny-s0" in report.read_text()
    assert json.loads(report.with_name("report.json").read_text())["claims"]
