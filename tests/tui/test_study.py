"""The paper's study from the app: the New study form shows `reproduce --dry-run`'s plan for exactly
its fields, queues the study through the workspace queue after asking, and the Report tab follows it
(queued, its runs, its probe sweeps) to its report."""

from __future__ import annotations

import asyncio
import json

import pytest
from textual.widgets import Input, OptionList, Select

from factrecall_tui.app import FactrecallApp
from factrecall_tui.confirm import Confirm
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.report_view import ReportPane, find_studies
from factrecall_tui.study_form import StudyScreen, study_argv
from factrecall_tui.tabs import Tabs
from jobs.errors import FactrecallError
from jobs.launch.queue import cancel, job_table, queued_studies, study_key, submit_study
from tests.helpers import PATIENCE_S, run_cli
from tests.tui.helpers import settle


def test_the_form_s_fields_become_reproduce_s_options_or_one_line():
    assert study_argv("tiny", "0-2", "0", "8", "", "") == [
        "--preset",
        "tiny",
        "--seeds",
        "0",
        "1",
        "2",
        "--name",
        "tiny",
        "--snapshots",
        "0",
        "--people",
        "8",
    ]
    assert study_argv("cpu", "1", "", "", "models/m", "mine")[-4:] == ["--name", "mine", "--model", "models/m"]
    with pytest.raises(FactrecallError, match="at least one"):
        study_argv("tiny", " ", "", "", "", "")
    with pytest.raises(FactrecallError, match="run name '../x'"):
        study_argv("tiny", "0", "", "", "", "../x")


def test_a_queued_study_is_listed_before_it_starts_refused_twice_and_taken_off_the_queue(tmp_path, capsys):
    ws = tmp_path / "ws"
    submit_study(ws, "tiny", ["--preset", "tiny", "--seeds", "0", "--name", "tiny"], start=False)
    assert queued_studies(ws) == {"tiny": "queued"}
    (study,) = find_studies(ws)
    assert study.name == "tiny" and study.status({}) == "queued: waits for a free slot"
    with pytest.raises(FactrecallError, match="study tiny is queued or running already"):
        submit_study(ws, "tiny", ["--preset", "tiny"], start=False)
    assert run_cli("--workspace", ws, "status") == 0
    assert "study:tiny" in capsys.readouterr().out
    assert [r["log"] for r in job_table(ws)] == [str(ws / "reproduce" / "tiny" / "job.out")]
    assert cancel(ws, study_key("tiny")) == "study:tiny: taken off the queue"
    assert queued_studies(ws) == {} and find_studies(ws) == []


def test_the_study_from_the_app_plans_queues_runs_and_reports(tmp_path):
    ws = tmp_path / "ws"

    async def session():
        app = FactrecallApp(ws, scan_every=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("5", "s")
            await settle(pilot, until=lambda: isinstance(app.screen, StudyScreen), what="the New study form")
            form = app.screen
            form.query_one("#study-preset", Select).value = "tiny"
            form.query_one("#study-seeds", Input).value = "0"
            form.query_one("#study-snapshots", Input).value = "0"
            form.query_one("#study-people", Input).value = "8"
            await pilot.press("ctrl+s")  # before the plan of these fields is in: nothing is queued
            await settle(pilot)
            assert app.screen is form and not (ws / "queue").exists()
            want = ["--preset", "tiny", "--seeds", "0", "--name", "tiny", "--snapshots", "0", "--people", "8"]
            await settle(pilot, until=lambda: form.planned == want, what="the dry run's plan")
            assert (
                "reproduce tiny (dry run: nothing written)" in form.plan_text
                and "runs: reproduce-tiny-s0" in form.plan_text
            )
            assert not (ws / "runs").exists()  # a dry run writes nothing

            form.query_one("#study-seeds", Input).value = "0 0"  # the CLI's own refusal, as one line
            await settle(pilot, until=lambda: form.plan_text and "seeds repeat" in form.plan_text, what="the refusal")
            assert form.planned is None
            form.query_one("#study-seeds", Input).value = "0"
            await settle(pilot, until=lambda: form.planned == want, what="the plan again")

            await pilot.press("ctrl+s")
            await settle(pilot, until=lambda: isinstance(app.screen, Confirm), what="the question")
            assert "Queue the study tiny: 1 run (seeds 0)" in str(app.screen.query_one("#confirm-question").render())
            await pilot.press("y")
            await settle(
                pilot, until=lambda: not isinstance(app.screen, (Confirm, StudyScreen)), what="the form to close"
            )
            assert app.query_one(Tabs).active == "report"
            report = app.query_one(ReportPane)
            seen = set()

            def label() -> str:
                options = app.query_one("#report-studies", OptionList)
                text = str(options.get_option_at_index(0).prompt) if options.option_count else ""
                seen.add(text.split("\n")[-1])
                seen.add("status: " + str(app.query_one("#report-status").render()))  # the line beside it too
                return text

            await settle(pilot, until=lambda: "report · 1" in label(), what="the study's report", patience=PATIENCE_S)
            assert report.current == "tiny"
            # Archiving one of its runs says what that does to the study, and n keeps it.
            await pilot.press("1")
            app.query_one(JobsPane).focus_run("reproduce-tiny-s0")
            await pilot.press("x")
            await settle(pilot, until=lambda: isinstance(app.screen, Confirm), what="the question")
            assert "It is a run of the study tiny: the report stays" in str(
                app.screen.query_one("#confirm-question").render()
            )
            await pilot.press("n")
            await settle(pilot, until=lambda: not isinstance(app.screen, Confirm), what="the answer")
            assert (ws / "runs" / "reproduce-tiny-s0").is_dir()
            return seen

    seen = asyncio.run(session())
    folder = ws / "reproduce" / "tiny"
    progress = json.loads((folder / "progress.json").read_text())
    assert progress["step"] == "done" and progress["runs_done"] == progress["runs_total"] == 1
    assert json.loads((folder / "report.json").read_text())["claims"]
    assert "$ factrecall-jobs --workspace" in (folder / "job.out").read_text()  # the queue ran it, console kept
    assert any("running · " in s for s in seen), seen  # followed while it ran, not only at the end
    assert any(s.startswith("status: tiny: running (") for s in seen), seen  # the status beside the list as well
