"""The Jobs screen as a researcher uses it: a form that refuses bad settings with a reason, jobs that
outlive the app, a reopened app that finds them, cancel, resume, the live log, a broken run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from textual.widgets import DataTable, Input, Log, Static

from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import STATUS_STYLE, JobsPane
from factrecall_tui.launch import LaunchScreen
from jobs.launch.queue import queued_runs
from jobs.run.folder import live_pid
from jobs.words import RUN_STATUSES
from tests.helpers import run_cli
from tests.tui.helpers import settle
from tests.tui.workspace import fixed_workspace, hold


def status_of(app: FactrecallApp, name: str) -> str | None:
    run = app.query_one(JobsPane).runs.get(name)
    return run.status if run else None


async def type_into(pilot, selector: str, text: str) -> None:
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    widget.value = ""
    await pilot.press(*text)


def test_the_launch_form_says_what_is_wrong_before_anything_is_launched(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from tests.jobs.tiny_gguf import byte_level_bpe, tiny_llama

    ws = tmp_path / "ws"
    tok = byte_level_bpe()  # a checkpoint as `models import` leaves one, under the name "imported"
    tiny_llama(tok.get_vocab_size()).save_pretrained(ws / "models" / "imported")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>").save_pretrained(ws / "models" / "imported")

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(100, 34)) as pilot:
            await pilot.press("n")
            await pilot.pause()
            form = app.screen
            assert isinstance(form, LaunchScreen)
            plan = form.query_one("#plan", Static)
            assert "queues 1 run" in str(plan.render()) and "cpu-stage+mix-s0" in str(plan.render())
            for selector, text, message in [
                ("#seeds", "0 x", "seeds 'x'"),
                ("#seeds", "1 1", "seeds repeat"),
                ("#people", "1", "--people 1 is out of range: give 2 or more"),
                ("#model", "/no/such/checkpoint", "no Hugging Face checkpoint there"),
                ("#model", "smollm2-135m", "no model imported into"),
                ("#settings", "train.mix.epochs", "write KEY=VALUE"),
                ("#settings", "train.mix.epoch=3", "train.mix.epoch"),
            ]:
                await type_into(pilot, selector, text)
                await pilot.pause()
                assert message in str(plan.render()), (text, str(plan.render()))
                await pilot.press("ctrl+s")  # refused: the form stays, nothing is written
                assert app.screen is form and not (ws / "runs").exists()
                form.query_one(selector, Input).value = {"#seeds": "0"}.get(selector, "")
            await type_into(pilot, "#model", "imported")  # the name of a model in WORKSPACE/models
            await pilot.pause()
            assert "queues 1 run" in str(plan.render()), str(plan.render())
            form.query_one("#model", Input).value = ""
            await type_into(pilot, "#seeds", "0-2")
            await type_into(pilot, "#people", "8")
            await pilot.pause()
            assert "queues 3 runs" in str(plan.render())
            await pilot.press("escape")
            assert not isinstance(app.screen, LaunchScreen) and not (ws / "runs").exists()

    asyncio.run(session())


def last_run_event(run) -> str | None:
    """The status of the run's last `run` event: "running" once the job itself has said so (a cancel
    in the second before that, while the process starts, is issue 9's to make safe)."""
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]
    return next((e["status"] for e in reversed(events) if e["kind"] == "run"), None)


def test_jobs_outlive_the_app_and_a_reopened_app_follows_and_stops_them(tmp_path):
    ws = tmp_path / "ws"
    name = "long"
    assert (
        run_cli("--workspace", ws, "submit", "--preset", "tiny", "--name", name, "--set", "train.bio.epochs=2000") == 0
    )

    async def first():
        app = FactrecallApp(ws, scan_every=0.3)
        async with app.run_test(size=(110, 30)) as pilot:
            await settle(
                pilot,
                until=lambda: (
                    status_of(app, name) == "running"
                    and app.query_one(JobsPane).runs[name].progress.get("eta_s") is not None
                    and app.query_one(JobsPane).runs[name].progress.get("step") == "train-bio"
                ),
                what="the job to train",
            )
            cell = str(app.query_one(DataTable).get_cell(name, "progress"))
            assert "train-bio 5/11" in cell and "ETA" in cell
            await pilot.press("l")  # its live log
            await settle(
                pilot,
                until=lambda: any("resume long" in line for line in app.screen.query_one("#job-out", Log).lines),
                what="the job's console in the log screen",
            )
            await pilot.press("escape")
        # The app is closed; the job is not.

    asyncio.run(first())
    pid = live_pid(ws / "runs" / name)
    assert pid is not None and pid != os.getpid()

    async def second():
        app = FactrecallApp(ws, scan_every=0.3)
        async with app.run_test(size=(110, 30)) as pilot:
            await settle(
                pilot, until=lambda: status_of(app, name) == "running", what="the reopened app to find the job"
            )
            assert app.query_one(JobsPane).selected.pid == pid
            await pilot.press("c", "y")  # stop it, and yes to the question that asks first
            await settle(pilot, until=lambda: status_of(app, name) == "interrupted", what="the job to stop")
            assert "interrupted" in str(app.query_one("#job-detail", Static).render())
            await pilot.press("r")  # resume: queued, then running from its last checkpoint
            await settle(
                pilot,
                until=lambda: status_of(app, name) == "running" and last_run_event(ws / "runs" / name) == "running",
                what="the resumed job to report itself running",
            )
            await pilot.press("c", "y")
            await settle(pilot, until=lambda: status_of(app, name) == "interrupted", what="the job to stop again")

    try:
        asyncio.run(second())
    finally:  # a failed assertion must not leave a 2000-epoch job running on the machine
        for folder in (ws / "queue").glob("*.json"):
            folder.unlink(missing_ok=True)
        if (left := live_pid(ws / "runs" / name)) is not None:
            os.kill(left, signal.SIGKILL)
    assert queued_runs(ws) == {}


def test_every_status_shows_and_a_broken_run_is_a_message_not_a_crash(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")
    (ws / "runs" / "garbled").mkdir()
    (ws / "runs" / "garbled" / "spec.json").write_text("{not json")
    fd = hold(ws / "runs" / "tiny-stage+mix-s1")

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot, until=lambda: app.query_one(JobsPane).runs, what="the scan")
            pane = app.query_one(JobsPane)
            assert {n: r.status for n, r in pane.runs.items()} == {
                "garbled": "broken",
                "tiny-stage+mix-s1": "running",
                "tiny-qa-s0": "new",
                "tiny-bio-s0": "queued",
                "tiny-stage-s0": "stopped",
                "tiny-mix-s0": "failed",
                "cpu-stage+mix-s0": "done",
                "cpu-stage+mix-s1": "done",
                "cpu-stage+mix-s2": "done",
            }
            table = app.query_one(DataTable)
            assert "50% train-mix 9/11 · ETA 3m12s" in str(table.get_cell("tiny-stage+mix-s1", "progress"))
            pane.focus_run("garbled")
            await pilot.pause()
            assert "cannot read this run" in str(app.query_one("#job-detail", Static).render())
            pane.focus_run("tiny-mix-s0")
            await pilot.pause()
            assert "more than train.row_len=288" in str(app.query_one("#job-detail", Static).render())
            await pilot.press("c")  # a failed run has nothing to cancel: said, not done
            await pilot.pause()
            assert status_of(app, "tiny-mix-s0") == "failed"
            pane.focus_run("tiny-bio-s0")
            await pilot.press("c")
            app.rescan()
            await settle(pilot, until=lambda: status_of(app, "tiny-bio-s0") == "new", what="the run off the queue")

    try:
        asyncio.run(session())
    finally:
        os.close(fd)


def test_hundreds_of_runs_scan_fast_and_the_first_frame_needs_no_torch(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")
    src = ws / "runs" / "cpu-stage+mix-s1"
    for i in range(300):
        dst = ws / "runs" / f"sweep-{i:03d}"
        dst.mkdir()
        for f in ("spec.json", "metrics.json", "events.jsonl"):
            (dst / f).write_bytes((src / f).read_bytes())
    code = (
        "import sys; from factrecall_tui.app import FactrecallApp; "
        "from factrecall_tui.runs import Scanner; s = Scanner(__import__('pathlib').Path(sys.argv[1])); "
        "runs = s.scan(); again = s.scan(); print(len(runs), len(again), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ws)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["308", "308", "False"]

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, until=lambda: len(app.query_one(JobsPane).runs) == 308, what="the scan")
            assert app.query_one(DataTable).row_count == 308
            for key in ("2", "3", "4", "1"):
                await pilot.press(key)
                await pilot.pause()

    asyncio.run(session())


def test_every_run_status_has_its_colour():
    assert set(STATUS_STYLE) == set(RUN_STATUSES)
