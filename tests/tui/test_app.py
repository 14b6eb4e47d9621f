"""The TUI as a researcher uses it: open a workspace, move through runs, read the accuracies."""

import asyncio
import json
import shutil
import subprocess
import sys

from textual.widgets import DataTable, ListView, Static

from factrecall_tui.app import FactrecallApp
from tests.conftest import metrics


def _cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_browsing_runs_shows_their_tables(tiny_run, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(tiny_run, workspace / "runs" / tiny_run.name)
    # A second run that is still training: no metrics beyond the baselines yet.
    other = workspace / "runs" / "other"
    other.mkdir(parents=True)
    (other / "spec.json").write_text((tiny_run / "spec.json").read_text())
    (other / "events.jsonl").write_text(json.dumps({"kind": "progress", "step": "train-bio", "done": 3, "total": 9}) + "\n")
    m = metrics(tiny_run)

    async def session():
        app = FactrecallApp(workspace)
        async with app.run_test(size=(110, 34)) as pilot:
            await pilot.pause()
            runs = app.query_one("#runs", ListView)
            assert len(runs.children) == 2
            names = [item.run.name for item in runs.children]
            runs.index = names.index(tiny_run.name)
            await pilot.pause()
            fig5 = _cells(app.query_one("#fig5", DataTable))
            assert fig5[0][0] == "Majority vote"
            mix = next(r for r in fig5 if r[0] == "Mix-tuned")
            assert mix[1:] == [f"{m['mix'][s]['avg']:.1f}" for s in ("bio", "qa_in", "qa_out")]
            fig1 = _cells(app.query_one("#fig1", DataTable))
            stage = next(r for r in fig1 if r[0] == "Stage-tuned")
            assert stage[1] == f"{m['stage']['qa_out']['avg']:.1f}"
            assert "done" in str(app.query_one("#title", Static).render())
            await pilot.press("up" if runs.index else "down")
            await pilot.pause()
            assert "running: train-bio 3/9" in str(app.query_one("#title", Static).render())
            assert app.query_one("#fig5", DataTable).row_count == 0
            await pilot.press("q")

    asyncio.run(session())


def test_the_tui_process_never_imports_torch():
    code = "import sys, factrecall_tui.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
