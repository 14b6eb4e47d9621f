"""`submit --executor slurm`: the submission script and options checked against a fake sbatch (and a
fake sacct and scancel) on PATH; real jobs through submitit's own local executor (the same submitit
machinery: its pickled call, its controller, its logs), followed with `status`, stopped with `cancel`
and read back by the TUI."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from factrecall_tui.runs import Scanner, read_run
from jobs.launch.queue import job_table, queued_runs
from jobs.run.events import read_events
from tests.helpers import metrics, run_cli, wait_until

pytest.importorskip("submitit")

FAKE = {
    "sbatch": 'if [ -f "$FAKE_SLURM/refuse" ]; then echo "sbatch: error: Batch job submission failed: Invalid account '
    'or account/partition combination specified" >&2; exit 1; fi; '
    'echo "$@" >> "$FAKE_SLURM/sbatch.args"; for last; do :; done; cp "$last" "$FAKE_SLURM/script.sh"; '
    'echo "Submitted batch job 4242"',
    "srun": 'echo "srun $@"',
    "sacct": 'if [ -f "$FAKE_SLURM/noacct" ]; then '
    'echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1; fi; '
    'cat "$FAKE_SLURM/sacct.txt" 2>/dev/null || echo "JobID|State|NodeList"',
    "scancel": 'echo "$@" >> "$FAKE_SLURM/scancel.args"; echo "$1|CANCELLED by 0|" >> "$FAKE_SLURM/sacct.txt"',
    "sinfo": 'printf "cpu*|(null)|2\\ngpu|gpu:a100:4(S:0-1)|16\\n"',  # a CPU partition (the default) and a GPU one
    # the controller lists a job while sacct.txt (the test's word) says it waits or runs, and every job before
    "squeue": 'while [ $# -gt 0 ]; do [ "$1" = -j ] && id=$2; shift; done; '
    'if [ -f "$FAKE_SLURM/sacct.txt" ]; then grep "^$id|" "$FAKE_SLURM/sacct.txt" | tail -1 | cut -d"|" -f1,2 | '
    'grep -E "PENDING|RUNNING"; else echo "$id|PENDING"; fi; exit 0',
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in FAKE.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    monkeypatch.delenv("FACTRECALL_SUBMITIT_CLUSTER", raising=False)
    import jobs.launch.slurm

    jobs.launch.slurm._states.clear()
    return state


def _status(workspace: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert run_cli("--workspace", workspace, "status", "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_seeds_and_strategies_go_to_slurm_as_one_array_job(fake_slurm, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert (
        run_cli(
            "--workspace",
            ws,
            "submit",
            "--preset",
            "tiny",
            "--seeds",
            "0",
            "1",
            "2",
            "--per-strategy",
            "--executor",
            "slurm",
            "--partition",
            "gpu",
            "--gpus",
            "2",
            "--time",
            "2-00:00:00",
            "--mem",
            "64G",
            "--cpus",
            "8",
            "--account",
            "lab",
            "--array-parallelism",
            "4",
            "--setup",
            "module load cuda",
            "--setup",
            "source /opt/venv/bin/activate",
        )
        == 0
    )
    script = (fake_slurm / "script.sh").read_text()
    assert (fake_slurm / "sbatch.args").read_text().count("\n") == 1  # one submission for all six runs
    for line in (
        "#SBATCH --array=0-5%4",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --time=2880",
        "#SBATCH --mem=64G",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --account=lab",
        "#SBATCH --job-name=factrecall",
        "#SBATCH --signal=USR2@120",
        "module load cuda\nsource /opt/venv/bin/activate",
        "-m submitit.core._submit",
    ):
        assert line in script, line
    runs = [f"tiny-{s}-s{seed}" for s in ("stage", "mix") for seed in (0, 1, 2)]
    assert sorted(queued_runs(ws)) == sorted(runs) and set(queued_runs(ws).values()) == {"queued"}
    rows = {r["run"]: r for r in _status(ws, capsys)}
    assert sorted(rows) == sorted(runs)
    assert {r["executor"] for r in rows.values()} == {"slurm"}
    assert sorted(r["job"] for r in rows.values()) == [f"4242_{i}" for i in range(6)]
    seen = read_run(ws / "runs" / "tiny-mix-s1", queued_runs(ws))  # the TUI's view of it
    assert seen.status == "queued" and seen.job == f"Slurm job {rows['tiny-mix-s1']['job']}"
    _jobs_tab_says(ws, "tiny-mix-s1", f"Slurm job {rows['tiny-mix-s1']['job']}, waiting for the scheduler")

    # The scheduler's word: a task that failed before the run began makes the run failed, with the
    # job's log named, in `status` and the app alike, though nothing is written to the run folder by
    # reading (a status read never writes); one still pending stays queued; a cancel of a pending
    # one is an scancel.
    mix_s1 = rows["tiny-mix-s1"]["job"]
    (fake_slurm / "sacct.txt").write_text(
        "JobID|State|NodeList\n"
        + "\n".join(f"4242_{i}|{'FAILED' if f'4242_{i}' == mix_s1 else 'PENDING'}|" for i in range(6))
        + "\n"
    )
    import jobs.launch.slurm

    jobs.launch.slurm._states.clear()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (ws / "runs" / "tiny-mix-s1").rglob("*"))
    assert "tiny-mix-s1" not in queued_runs(ws) and len(queued_runs(ws)) == 5
    assert "tiny-mix-s1" not in {r["run"] for r in _status(ws, capsys)}
    seen = scan_one(ws, "tiny-mix-s1")
    assert seen.status == "failed" and f"slurm job {mix_s1} ended as FAILED" in seen.last_run["error"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (ws / "runs" / "tiny-mix-s1").rglob("*")) == before
    assert run_cli("--workspace", ws, "cancel", "tiny-stage-s0") == 0
    assert rows["tiny-stage-s0"]["job"] in (fake_slurm / "scancel.args").read_text()
    assert "cancelled before it started" in capsys.readouterr().out
    assert "tiny-stage-s0" not in queued_runs(ws)
    # Submitting a run that is on the scheduler's queue already is refused.
    assert (
        run_cli(
            "--workspace", ws, "submit", "--preset", "tiny", "--seed", "2", "--strategy", "mix", "--executor", "slurm"
        )
        == 2
    )
    assert "queued already" in capsys.readouterr().err


def test_the_study_goes_to_slurm_and_reproduce_waits_for_it(fake_slurm, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert (
        run_cli(
            "--workspace",
            ws,
            "reproduce",
            "--preset",
            "tiny",
            "--seeds",
            "0",
            "1",
            "--snapshots",
            "2",
            "--executor",
            "slurm",
            "--partition",
            "gpu",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "submitted reproduce-tiny-s0 as slurm job 4242_0" in out and "fits the probes" in out
    assert "#SBATCH --array=0-1" in (fake_slurm / "script.sh").read_text()
    spec = json.loads((ws / "runs" / "reproduce-tiny-s1" / "spec.json").read_text())
    assert spec["strategies"] == ["bio", "stage", "mix"] and spec["train"]["snapshots"] == 2  # the study's own runs
    # Until the jobs are done, reproduce does not train them here as well.
    assert run_cli("--workspace", ws, "reproduce", "--preset", "tiny", "--seeds", "0", "1", "--snapshots", "2") == 2
    assert "are queued or running" in capsys.readouterr().err
    assert not (ws / "reproduce" / "tiny" / "report.md").exists()


def _jobs_tab_says(ws: Path, run: str, text: str) -> None:
    import asyncio

    from textual.widgets import Static

    from factrecall_tui.app import FactrecallApp
    from factrecall_tui.jobs_pane import JobsPane
    from tests.tui.helpers import settle

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot, until=lambda: app.query_one(JobsPane).runs, what="the first scan")
            app.query_one(JobsPane).focus_run(run)
            await settle(
                pilot,
                until=lambda: text in str(app.query_one("#job-detail", Static).render()),
                what=f"the Jobs tab to say {text!r}",
            )

    asyncio.run(session())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--time", "soon"], "--time 'soon': give minutes (90), HH:MM:SS"),
        (["--mem", "lots"], "--mem 'lots': give Slurm's form, e.g. 64G"),
        (["--gpus", "-1"], "argument --gpus: -1 is out of range: give 0 or more"),
        (["--partition", "gpu\ntouch PWNED #"], "--partition 'gpu\\ntouch PWNED #' holds a control character"),
        (["--setup", "module load cuda\nrm -rf ~"], "holds a control character (a newline?)"),
        (["--account", "lab one"], "--account 'lab one': Slurm names hold no spaces"),
        # against what sinfo says (the fake's default partition `cpu` has no GPUs and 2 CPUs a node)
        (["--gpus", "1"], "--gpus 1: partition cpu has no GPUs (sinfo); give --gpus 0, or a partition with GPUs"),
        (["--partition", "gpu", "--gpus", "8"], "--gpus 8: no node of partition gpu has more than 4 (sinfo)"),
        (["--cpus", "8"], "--cpus 8: no node of partition cpu has more than 2 CPUs (sinfo); Slurm would hold"),
        (["--partition", "nosuch"], "--partition nosuch: no such partition on this cluster (sinfo lists cpu, gpu)"),
    ],
)
def test_bad_slurm_options_are_refused_before_anything_is_written(fake_slurm, tmp_path, capsys, args, says):
    assert run_cli("--workspace", tmp_path / "ws", "submit", "--preset", "tiny", "--executor", "slurm", *args) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists() and not (fake_slurm / "sbatch.args").exists()


def test_the_gpus_asked_for_follow_the_partition_and_a_refusal_by_sbatch_leaves_nothing(fake_slurm, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert run_cli("--workspace", ws, "submit", "--preset", "tiny", "--strategy", "bio", "--executor", "slurm") == 0
    assert "partition cpu has no GPUs: each job asks for 0" in capsys.readouterr().out
    assert "#SBATCH --gpus-per-node=0" in (fake_slurm / "script.sh").read_text()
    assert (
        run_cli(
            "--workspace",
            ws,
            "submit",
            "--preset",
            "tiny",
            "--strategy",
            "mix",
            "--executor",
            "slurm",
            "--partition",
            "gpu",
        )
        == 0
    )
    assert "partition gpu has GPUs: each job asks for 1" in capsys.readouterr().out
    assert "#SBATCH --gpus-per-node=1" in (fake_slurm / "script.sh").read_text()
    assert run_cli("--workspace", ws, "cancel", "tiny-bio-s0", "tiny-mix-s0") == 0

    # sbatch refuses (an account Slurm does not know): one line, the run folders this submit made are
    # gone, one made before stays as it was, and submitit's pickle and script are not left behind.
    (fake_slurm / "refuse").touch()
    kept = ws / "runs" / "tiny-bio-s0"
    before = {p.name: p.read_bytes() for p in kept.rglob("*") if p.is_file() and p.name != "run.lock"}
    own = sorted((ws / "queue" / "slurm" / "submitit").iterdir())
    capsys.readouterr()
    assert (
        run_cli(
            "--workspace",
            ws,
            "submit",
            "--preset",
            "tiny",
            "--seeds",
            "0",
            "1",
            "--strategy",
            "bio",
            "--executor",
            "slurm",
            "--account",
            "nobody",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "the Slurm submission failed: sbatch: error: Batch job submission failed: Invalid account" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (ws / "runs").iterdir()) == ["tiny-bio-s0", "tiny-mix-s0"]
    assert {p.name: p.read_bytes() for p in kept.rglob("*") if p.is_file() and p.name != "run.lock"} == before
    assert sorted((ws / "queue" / "slurm" / "submitit").iterdir()) == own


def test_status_follows_the_scheduler_through_a_requeue_and_without_accounting(fake_slurm, tmp_path, capsys):
    """A run interrupted at a time limit's warning stays queued while Slurm holds its requeued job
    (so no second study starts beside it), and ends when Slurm is done with the job; on a cluster
    without accounting, a job the controller has forgotten is taken as ended, and sacct's complaint
    is not printed over `status`."""
    import jobs.launch.slurm

    ws = tmp_path / "ws"
    assert (
        run_cli(
            "--workspace",
            ws,
            "submit",
            "--preset",
            "tiny",
            "--strategy",
            "bio",
            "--seeds",
            "0",
            "1",
            "--executor",
            "slurm",
        )
        == 0
    )
    held, dropped = ws / "runs" / "tiny-bio-s0", ws / "runs" / "tiny-bio-s1"
    with (held / "events.jsonl").open("a") as f:  # what the run wrote: it ran, then saved at the warning
        for status in ("running", "interrupted"):
            f.write(json.dumps({"time": time.time(), "kind": "run", "status": status}) + "\n")

    def scheduler_says(lines: str) -> None:
        (fake_slurm / "sacct.txt").write_text("JobID|State|NodeList\n" + lines)
        jobs.launch.slurm._states.clear()

    scheduler_says("4242_0|PENDING|\n4242_1|RUNNING|\n")  # the hold after the requeue
    assert queued_runs(ws) == {"tiny-bio-s0": "queued", "tiny-bio-s1": "starting"}
    capsys.readouterr()  # and it may not be started a second time meanwhile
    assert run_cli("--workspace", ws, "submit", "--preset", "tiny", "--strategy", "bio", "--seed", "0") == 2
    assert "run tiny-bio-s0 is queued already" in capsys.readouterr().err
    scheduler_says("4242_0|COMPLETED|\n4242_1|RUNNING|\n")  # Slurm is done with it: interrupted, resumable
    assert "tiny-bio-s0" not in queued_runs(ws) and scan_one(ws, "tiny-bio-s0").status == "interrupted"

    (fake_slurm / "noacct").touch()  # no accounting, and the controller has forgotten s1's job
    scheduler_says("")
    capsys.readouterr()
    assert "tiny-bio-s1" not in {r["run"] for r in _status(ws, capsys)}
    assert capsys.readouterr().err == ""
    seen = scan_one(ws, "tiny-bio-s1")
    assert seen.status == "failed" and "slurm job 4242_1 ended as GONE" in seen.last_run["error"]
    assert not dropped.joinpath("events.jsonl").exists() or "GONE" not in dropped.joinpath("events.jsonl").read_text()


def test_no_slurm_here_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    monkeypatch.delenv("FACTRECALL_SUBMITIT_CLUSTER", raising=False)
    assert run_cli("--workspace", tmp_path / "ws", "submit", "--preset", "tiny", "--executor", "slurm") == 2
    err = capsys.readouterr().err
    assert "cannot submit to Slurm from here" in err and "login node" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists()


def scan_one(ws: Path, name: str):
    """The app's view of one run, as its scanner makes it every second."""
    return next(r for r in Scanner(ws).scan() if r.name == name)


def _run_events(folder: Path) -> list[dict]:
    return [e for e in read_events(folder) if e.get("kind") == "run"]


def _last_status(folder: Path) -> str | None:
    """How the run's last job stands (None before its first `run` event)."""
    ends = _run_events(folder)
    return ends[-1]["status"] if ends else None


@pytest.fixture
def submitit_local(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTRECALL_SUBMITIT_CLUSTER", "local")
    import jobs.launch.slurm

    jobs.launch.slurm._states.clear()
    ws = tmp_path / "ws"
    yield ws
    for entry in jobs.launch.slurm.entries(ws):  # nothing left running after a failed assertion
        pid = int(entry["job_id"])
        if jobs.launch.procs.alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_job_through_submitits_local_executor_runs_and_is_followed(submitit_local, capsys):
    ws = submitit_local
    assert (
        run_cli(
            "--workspace",
            ws,
            "submit",
            "--preset",
            "tiny",
            "--strategy",
            "bio",
            "--executor",
            "slurm",
            "--gpus",
            "0",
            "--time",
            "10",
            "--set",
            "train.bio.epochs=40",
            "--name",
            "local",
        )
        == 0
    )
    assert "submitted local as local job" in capsys.readouterr().out
    run = ws / "runs" / "local"
    rows = wait_until(lambda: [r for r in job_table(ws) if r["status"] == "running" and r["progress"]], "progress")
    assert rows[0]["executor"] == "submitit-local" and rows[0]["progress"].split()[0] in (
        "data",
        "tokenizer",
        "init",
        "eval-untrained",
        "train-bio",
    )
    wait_until(lambda: not job_table(ws), "the job to end")
    assert _run_events(run)[-1]["status"] == "done"
    assert metrics(run)["bio"]["bio"]["avg"] > 0
    assert "# submitit job" in (run / "job.out").read_text()  # the console output, where the TUI's log view reads it
    log = Path(json.loads((ws / "queue" / "slurm" / "local.json").read_text())["log"])
    assert "Starting with JobEnvironment" in wait_until(lambda: log.exists() and log.read_text(), "submitit's log")


def test_cancel_stops_a_submitit_job_and_keeps_its_checkpoint(submitit_local, capsys):
    ws = submitit_local
    assert (
        run_cli(
            "--workspace",
            ws,
            "submit",
            "--preset",
            "tiny",
            "--strategy",
            "bio",
            "--executor",
            "slurm",
            "--gpus",
            "0",
            "--time",
            "10",
            "--set",
            "train.bio.epochs=4000",
            "--set",
            "train.checkpoint_every=20",
            "--name",
            "long",
        )
        == 0
    )
    run = ws / "runs" / "long"
    # At least one step trained (a job stopped before its first step has nothing to keep), however
    # slowly a loaded machine starts it.
    wait_until(lambda: any(_steps_done(r["progress"], "train-bio") for r in job_table(ws)), "a training step")
    assert run_cli("--workspace", ws, "cancel", "long") == 0
    assert "stopping (local job" in capsys.readouterr().out
    wait_until(lambda: _last_status(run) == "interrupted", "the job to stop")
    assert (run / "checkpoints" / "bio" / "last" / "state.json").exists()  # resumable: what it trained is kept
    wait_until(lambda: not job_table(ws), "the job to leave the table")


def _steps_done(progress: str, step: str) -> int:
    """The steps a job's progress (`train-bio 1,200/3,000`) says are done, 0 before its first."""
    words = progress.split()
    if len(words) != 2 or words[0] != step or "/" not in words[1]:
        return 0
    return int(words[1].split("/")[0].replace(",", ""))


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_a_job_warned_of_its_time_limit_saves_requeues_and_finishes(submitit_local, capsys):
    """Slurm's warning before the time limit (USR2, as --signal=USR2@120 asks) reaches the task:
    the job saves a checkpoint and stops, submitit requeues the task, and the run resumes from that
    checkpoint to the end."""
    if not Path("/proc/self/task").exists():
        pytest.skip("needs /proc to find the task process")
    ws = submitit_local
    assert (
        run_cli(
            "--workspace",
            ws,
            "submit",
            "--preset",
            "tiny",
            "--strategy",
            "bio",
            "--executor",
            "slurm",
            "--gpus",
            "0",
            "--time",
            "10",
            "--set",
            "train.bio.epochs=150",
            "--set",
            "train.checkpoint_every=20",
            "--name",
            "warned",
        )
        == 0
    )
    run = ws / "runs" / "warned"
    wait_until(
        lambda: any(
            r["progress"].startswith("train-bio") and int(r["progress"].split()[1].split("/")[0]) >= 40
            for r in job_table(ws)
        ),
        "40 training steps",
    )
    controller = int(json.loads((ws / "queue" / "slurm" / "warned.json").read_text())["job_id"])
    task = _children(controller)[0]
    # Slurm's warning goes to every process of the job step, the task's child `resume` first here (it
    # used to die of it at once, saving nothing, before the task could ask it to save).
    for pid in (*_children(task), task):
        os.kill(pid, signal.SIGUSR2)
    wait_until(lambda: _last_status(run) in ("done", "failed") and not job_table(ws), "the run to end")
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["status"] for e in events if e["kind"] == "run"] == ["running", "interrupted", "running", "done"]
    requeued = max(i for i, e in enumerate(events) if e["kind"] == "run" and e["status"] == "running")
    before = [e["done"] for e in events[:requeued] if e["kind"] == "progress" and e["step"] == "train-bio"]
    after = [e["done"] for e in events[requeued:] if e["kind"] == "progress" and e["step"] == "train-bio"]
    assert before[-1] >= 40 and after[0] > before[-1]  # resumed from the checkpoint it saved, not from step 0
    assert after[-1] == metrics(run)["train"]["bio"]["steps"]
