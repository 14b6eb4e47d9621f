"""The workspace queue as a researcher uses it from a shell: `submit` returns at once, a background
worker runs the jobs one at a time, `queue` shows them, `cancel` stops one and keeps its work."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from factrecall_tui.runs import scan
from jobs.errors import RunFolderError
from jobs.launch.queue import cancel, queued_runs, remove_run, submit
from tests.helpers import run_cli, wait_until
from tests.tui.workspace import fixed_workspace, hold


def statuses(ws: Path) -> dict[str, str]:
    return {r.name: r.status for r in scan(ws)}


def run_events(run: Path) -> list[dict]:
    return [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if e["kind"] == "run"]


def test_submitted_runs_wait_their_turn_and_finish_in_the_background(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert run_cli("--workspace", ws, "submit", "--preset", "tiny", "--people", "8", "--seeds", "0", "1") == 0
    names = ["tiny-stage+mix-s0-e952e0", "tiny-stage+mix-s1-e952e0"]
    assert statuses(ws)[names[1]] == "queued"  # submit returned before the work: that is the worker's
    assert "queued tiny-stage+mix-s0-e952e0" in capsys.readouterr().out
    # On a CPU-only machine one job runs at a time: while the first runs, the second waits.
    first = wait_until(lambda: statuses(ws).get(names[0]) == "running", "the first job to start")
    assert first and statuses(ws)[names[1]] == "queued"
    assert run_cli("--workspace", ws, "queue") == 0
    out = capsys.readouterr().out
    assert names[0] in out and "queued" in out
    wait_until(lambda: set(statuses(ws).values()) == {"done"}, "both jobs to finish")
    ends = {n: run_events(ws / "runs" / n) for n in names}
    assert ends[names[0]][-1]["time"] <= ends[names[1]][0]["time"]  # one after the other
    for n in names:
        m = json.loads((ws / "runs" / n / "metrics.json").read_text())
        assert 0 <= m["mix"]["bio"]["avg"] <= 100 and (ws / "runs" / n / "done" / "dump.json").exists()
        assert "eval-mix: done" in (ws / "runs" / n / "job.out").read_text()
    assert queued_runs(ws) == {}
    assert "started pid" in (ws / "queue" / "worker.log").read_text()


def test_a_queued_run_can_be_taken_off_the_queue(tmp_path):
    ws = tmp_path / "ws"
    assert run_cli("--workspace", ws, "run", "--preset", "tiny", "--people", "4", "--no-dump", "--name", "r") == 0
    submit(ws, "r", start=False)  # no worker: it stays queued
    assert statuses(ws)["r"] == "queued"
    with pytest.raises(Exception, match="queued already"):
        submit(ws, "r", start=False)
    assert "taken off the queue" in cancel(ws, "r")
    assert statuses(ws)["r"] == "done" and queued_runs(ws) == {}


def test_cancelling_or_killing_a_running_job_keeps_its_work(tmp_path):
    ws = tmp_path / "ws"
    assert (
        run_cli("--workspace", ws, "submit", "--preset", "tiny", "--name", "long", "--set", "train.bio.epochs=2000")
        == 0
    )
    run = ws / "runs" / "long"
    wait_until(lambda: (run / "checkpoints" / "bio" / "last").exists(), "a training checkpoint")
    assert "stopping" in cancel(ws, "long")
    wait_until(lambda: statuses(ws)["long"] == "interrupted", "the job to stop")
    assert run_events(run)[-1]["status"] == "interrupted"
    assert {"data", "tokenizer", "init", "eval-untrained"} <= {p.stem for p in (run / "done").glob("*.json")}
    wait_until(lambda: queued_runs(ws) == {}, "the worker to let the job go")
    assert "not running" in cancel(ws, "long")

    # Resumed, then killed without a chance to say so: the worker records it for the job.
    submit(ws, "long")
    pid = wait_until(
        lambda: next((r.pid for r in scan(ws) if r.status == "running" and r.pid and r.progress), None),
        "the resumed job to train",
    )
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: statuses(ws)["long"] == "interrupted", "the worker to record the kill")
    assert "exited with code -9" in run_events(run)[-1]["error"]
    assert (run / "checkpoints" / "bio" / "last").exists()  # resume continues from here


def test_archive_and_delete_move_a_finished_run_out_of_every_list_and_refuse_a_live_one(tmp_path, capsys):
    """`archive` moves a run to WORKSPACE/archive/ (moving it back restores it), `delete --yes` removes
    it; a queued or running run, or one a process holds, is refused with one line and left as it was."""
    ws = fixed_workspace(tmp_path / "ws")
    done, queued, running = "cpu-stage+mix-s1", "tiny-bio-s0", "tiny-stage-s0"
    before = statuses(ws)
    assert before[done] == "done" and before[queued] == "queued"

    assert run_cli("--workspace", ws, "archive", done) == 0
    assert "archived to" in capsys.readouterr().out
    assert done not in statuses(ws) and (ws / "archive" / done / "metrics.json").exists()
    assert run_cli("--workspace", ws, "queue") == 0 and done not in capsys.readouterr().out
    (ws / "archive" / done).rename(ws / "runs" / done)  # restored by hand, as the message says
    assert statuses(ws)[done] == "done"

    # Refused, all of them, when one of several cannot go; nothing moves.
    assert run_cli("--workspace", ws, "archive", done, queued) == 2
    assert f"run {queued} is queued: cancel it first" in capsys.readouterr().err
    assert statuses(ws)[done] == "done" and not (ws / "archive" / done).exists()
    fd = hold(ws / "runs" / running, pid=os.getpid())  # a process holds it: running
    assert run_cli("--workspace", ws, "delete", running, "--yes") == 2
    assert "is running: cancel it first" in capsys.readouterr().err and (ws / "runs" / running).is_dir()
    with pytest.raises(RunFolderError, match="is running: cancel it first"):  # the same below the CLI
        remove_run(ws, running)
    os.close(fd)

    # A name archived before is not overwritten.
    (ws / "archive" / done).mkdir(parents=True)
    assert run_cli("--workspace", ws, "archive", done) == 2
    assert "exists already (archived before?)" in capsys.readouterr().err and (ws / "runs" / done).is_dir()
    (ws / "archive" / done).rmdir()

    # A delete that a crash interrupted left its folder under archive/: the next one removes it.
    (ws / "archive" / ".deleting-old-1").mkdir()
    assert run_cli("--workspace", ws, "delete", done, "--yes") == 0
    assert f"{done}: deleted" in capsys.readouterr().out
    assert not (ws / "runs" / done).exists() and list((ws / "archive").iterdir()) == []


@pytest.mark.parametrize(
    "progress, says",
    [
        (
            {"step": "runs", "runs_done": 2, "runs_total": 6, "current": "reproduce-cpu-s2"},
            "runs 2/6 (reproduce-cpu-s2)",
        ),
        ({"step": "probes", "probes_done": 40, "probes_total": 270}, "probes 40/270"),
        ({"step": "interventions", "patched": 1200, "patch_total": 7600}, "interventions 1,200/7,600"),
        ({"step": "interventions"}, "interventions"),
        ({"step": "report"}, "report"),
    ],
)
def test_a_studys_progress_in_words(tmp_path, progress, says):
    from jobs.launch.queue import study_progress_text

    (tmp_path / "progress.json").write_text(json.dumps(progress))
    assert study_progress_text(tmp_path) == says
