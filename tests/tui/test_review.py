"""The app's keys, forms and messages where they once went wrong, each set up as a user met it: a
resumed phase's ETA, the launch form on a small screen and with many seeds, stopping a job, resuming a
finished run, screenshots, a narrow terminal, a run started from a shell, a piped table. A tab that
switched back by itself needs a real terminal: tests/tui/test_terminal.py."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from textual.widgets import DataTable, Static

from factrecall_tui.app import FactrecallApp
from factrecall_tui.confirm import Confirm
from factrecall_tui.jobs_pane import COLUMNS, JobsPane
from factrecall_tui.launch import LaunchScreen
from tests.tui.helpers import settle
from tests.tui.workspace import fixed_workspace, hold


def drive(ws, size, script):
    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=size) as pilot:
            await settle(pilot, until=lambda: app.query_one(JobsPane).runs, what="the first scan")
            return await script(app, pilot)

    return asyncio.run(session())


def test_a_resumed_phase_s_eta_counts_only_its_own_steps(monkeypatch):
    import jobs.run.pipeline as pipeline

    events, clock = [], [100.0]
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: clock[0])

    class Run:
        def emit(self, kind, **fields):
            events.append(fields)

    throttle = pipeline._Throttle(Run(), "train-mix", 305)
    clock[0] = 101.0
    throttle(271)  # the first step after resuming from a checkpoint at step 270
    clock[0] = 111.0
    throttle(281)  # 10 steps in 10 s since: 24 steps left take 24 s (not 281 steps in 11 s: 0.9 s)
    assert events[-1]["eta_s"] == pytest.approx(24.0)


def test_the_launch_form_keeps_its_check_and_buttons_on_an_80x24_screen(tmp_path):
    async def script(app, pilot):
        await pilot.press("n")
        await settle(pilot, until=lambda: isinstance(app.screen, LaunchScreen), what="the form")
        form = app.screen
        for wid in ("#plan", "#launch-button", "#cancel-button"):
            region = form.query_one(wid).region
            assert region.height >= 1 and region.bottom <= 24 and region.right <= 80, (wid, region)

    drive(fixed_workspace(tmp_path / "ws"), (80, 24), script)


def test_a_name_of_another_experiment_is_refused_in_the_form(tmp_path):
    async def script(app, pilot):
        await pilot.press("n")
        await settle(pilot, until=lambda: isinstance(app.screen, LaunchScreen), what="the form")
        form = app.screen
        form.query_one("#name").value = "tiny-mix-s0"  # a tiny run exists under that name; the form says cpu
        await settle(pilot, until=lambda: "✗" in str(form.query_one("#plan", Static).render()), what="the check")
        said = str(form.query_one("#plan", Static).render())
        assert "run tiny-mix-s0 exists and holds a different experiment: change Name" in said
        await pilot.press("ctrl+s")
        assert app.screen is form

    drive(fixed_workspace(tmp_path / "ws"), (120, 36), script)


def test_stopping_a_running_job_is_asked_first_and_the_palette_names_its_run(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")
    fd = hold(ws / "runs" / "tiny-stage+mix-s1", pid=999_999)  # running, by a pid that is no job

    async def script(app, pilot):
        jobs = app.query_one(JobsPane)
        await settle(pilot, until=lambda: jobs.runs["tiny-stage+mix-s1"].status == "running", what="running")
        jobs.focus_run("tiny-stage+mix-s1")
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Cancel job tiny-stage+mix-s1" in commands and "Cancel job" not in commands
        await pilot.press("c")
        await settle(pilot, until=lambda: isinstance(app.screen, Confirm), what="the question")
        assert "Stop tiny-stage+mix-s1 (step train-mix)?" in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("n")  # kept running: nothing was asked of it
        await settle(pilot, until=lambda: not isinstance(app.screen, Confirm), what="the answer")
        assert not (ws / "queue" / "cancel").exists() and "tiny-stage+mix-s1" not in jobs.stopping
        await pilot.press("c")
        await settle(pilot, until=lambda: isinstance(app.screen, Confirm), what="the question again")
        await pilot.press("enter")  # Enter presses the focused button, and the focus starts on the safe one
        await settle(pilot, until=lambda: not isinstance(app.screen, Confirm), what="the answer")
        assert not (ws / "queue" / "cancel").exists() and "tiny-stage+mix-s1" not in jobs.stopping
        from factrecall_tui.jobs_pane import _cells

        assert str(_cells(jobs.runs["tiny-stage+mix-s1"], stopping=True)[1]) == "stopping…"

    try:
        drive(ws, (120, 36), script)
    finally:
        os.close(fd)


def test_r_on_a_finished_run_says_there_is_nothing_to_resume(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")

    async def script(app, pilot):
        app.query_one(JobsPane).focus_run("cpu-stage+mix-s0")
        await pilot.press("r")
        await pilot.pause()
        assert not list((ws / "queue").glob("*cpu-stage+mix-s0.json"))
        return [n.message for n in app._notifications]

    said = drive(ws, (120, 36), script)
    assert any("cpu-stage+mix-s0 is done: nothing to resume" in str(m) for m in said)


def test_a_stopped_job_says_it_was_stopped_on_request(tmp_path):
    import jobs.run.train as train
    from tests.helpers import run_cli

    real = train.save_checkpoint

    def stop(folder, model, opt, state):
        real(folder, model, opt, state)
        raise KeyboardInterrupt

    train.save_checkpoint = stop
    try:
        assert run_cli("--workspace", tmp_path, "run", "--preset", "tiny", "--strategy", "bio", "--no-dump") == 130
    finally:
        train.save_checkpoint = real
    events = [
        json.loads(line)
        for line in next((tmp_path / "runs").iterdir()).joinpath("events.jsonl").read_text().splitlines()
    ]
    end = [e for e in events if e["kind"] == "run"][-1]
    assert end["status"] == "interrupted" and end["error"].startswith("stopped on request")


def test_the_worker_counts_a_run_a_shell_works_on(tmp_path):
    from jobs.launch.worker import Worker

    ws = fixed_workspace(tmp_path / "ws")
    worker = Worker(ws, slots=1)
    assert worker.running_elsewhere() == []
    fd = hold(ws / "runs" / "tiny-qa-s0")  # a `run` typed in a shell
    try:
        assert worker.running_elsewhere() == ["tiny-qa-s0"]
    finally:
        os.close(fd)


def test_the_class_count_of_several_runs_is_their_range():
    import pandas as pd

    from store.probe_tables import counts

    assert counts(pd.DataFrame({"n_classes": [6, 5, 6]}), "n_classes") == "5–6"
    assert counts(pd.DataFrame({"n_classes": [6, 6]}), "n_classes") == "6"


def test_the_index_error_starts_with_what_to_do():
    from factrecall_tui.store_browse import BadIndex, parse_index

    with pytest.raises(BadIndex, match=r"^give an integer for all but two dimensions, e.g. 0, 0, 0, 0, :8, :6"):
        parse_index("", (4, 3, 2, 6, 16, 64), ("model", "format", "layer", "attribute", "person", "hidden"))


def test_a_screenshot_goes_into_the_workspace_and_says_where(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")

    async def script(app, pilot):
        saved = app.deliver_screenshot()
        await settle(pilot, until=lambda: list(app._notifications), what="the notification")
        return saved, [str(n.message) for n in app._notifications]

    saved, said = drive(ws, (100, 30), script)
    assert saved and saved.startswith(str(ws / "screenshots")) and os.path.getsize(saved) > 1000
    assert any(saved in m for m in said)


def test_enter_in_the_launch_form_moves_on_and_many_runs_are_asked_first(tmp_path):
    ws = tmp_path / "ws"

    async def script(app, pilot):
        await pilot.press("n")
        await settle(pilot, until=lambda: isinstance(app.screen, LaunchScreen), what="the form")
        form = app.screen
        form.query_one("#preset").value = "tiny"
        form.query_one("#seeds").focus()
        form.query_one("#seeds").value = "0-999"
        await pilot.pause()
        assert "at most 200 seeds from the form" in str(form.query_one("#plan", Static).render())
        form.query_one("#seeds").value = "0-11"
        await pilot.press("enter")  # moves on; launches nothing
        await pilot.pause()
        assert app.screen is form and not (ws / "runs").exists()
        await pilot.press("ctrl+s")
        await settle(pilot, until=lambda: isinstance(app.screen, Confirm), what="the question")
        assert "Queue 12 runs?" in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("n")
        await pilot.pause()
        assert not (ws / "runs").exists()

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        async with app.run_test(size=(120, 36)) as pilot:
            await script(app, pilot)

    asyncio.run(session())


def test_a_short_narrow_terminal_still_shows_runs_and_their_status(tmp_path):
    async def script(app, pilot):
        table = app.query_one("#jobs-table", DataTable)
        await settle(pilot, until=lambda: table.row_count, what="rows")
        assert list(COLUMNS)[:3] == ["run", "status", "progress"]  # what 60 columns must show
        assert table.region.height >= 3  # the header and rows, not only the detail panel

    drive(fixed_workspace(tmp_path / "ws"), (40, 12), script)


def test_a_run_started_from_a_shell_explains_its_empty_console(tmp_path):
    from textual.widgets import Log

    ws = fixed_workspace(tmp_path / "ws")

    async def script(app, pilot):
        app.query_one(JobsPane).focus_run("cpu-stage+mix-s0")
        await pilot.press("l")
        await settle(
            pilot,
            until=lambda: (
                app.screen.query("#job-out") and "no job.out" in "\n".join(app.screen.query_one("#job-out", Log).lines)
            ),
            what="the note",
        )

    drive(ws, (120, 36), script)


def test_a_piped_show_table_is_not_cut_to_a_terminal_s_width(tmp_path):
    import subprocess
    import sys

    ws = fixed_workspace(tmp_path / "ws")
    out = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--workspace", str(ws), "show", "cpu-stage+mix-s0", "cpu-stage+mix-s1"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    ).stdout
    assert "…" not in out and max(len(line) for line in out.splitlines()) > 80  # a pipe: the width it needs
