"""A researcher's whole session in the app: launch a small job from the form, watch it finish, read
its accuracies, fit probes on its store and find the CLI's numbers, browse the store, read the log."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pandas as pd
from textual.widgets import DataTable, Input, Log

from factrecall_tui.accuracy import AccuracyPane, row_key
from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.launch import LaunchScreen
from factrecall_tui.probes import ProbesPane
from factrecall_tui.store_view import StorePane
from jobs.report import cell
from jobs.spec import ATTRIBUTES
from store.probes import COLUMNS
from tests.conftest import metrics, run_cli
from tests.tui.test_jobs import status_of, until


def test_launch_watch_read_accuracies_fit_probes_and_browse_the_store(tmp_path):
    ws = tmp_path / "ws"
    name = "tiny-stage+mix-s0-e952e0"  # tiny preset, 8 people

    async def session():
        app = FactrecallApp(ws, scan_every=0.3)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("n")
            await pilot.pause()
            assert isinstance(app.screen, LaunchScreen)
            await pilot.click("#preset")
            await pilot.press("down", "down", "enter")  # cpu, paper, tiny
            people = app.screen.query_one("#people", Input)
            people.focus()
            await pilot.press("8")
            await pilot.pause()
            assert name in str(app.screen.query_one("#plan").render())
            await pilot.click("#launch-button")
            await until(pilot, lambda: status_of(app, name) in ("queued", "running"), 10, "the job to be listed")
            assert app.query_one(JobsPane).selected.name == name
            await until(pilot, lambda: status_of(app, name) == "done", 180, "the job to finish")
            assert "all steps done" in str(app.query_one("#jobs-table", DataTable).get_cell(name, "progress"))
            m = metrics(ws / "runs" / name)

            # Accuracy: the same strings as `factrecall-jobs show`, and the chart's bars are the numbers.
            await pilot.press("a")
            acc = app.query_one(AccuracyPane)
            await until(pilot, lambda: acc.groups, 20, "the accuracy tables")
            fig1 = app.query_one("#acc-fig1", DataTable)
            for model in ("stage", "mix"):
                row = fig1.get_row(row_key(name, model))
                assert cell([m[model]["qa_out"]["avg"]], 1) in [str(c) for c in row]
                assert cell([m[model]["qa_out"]["job"]], 1) == str(fig1.get_cell(row_key(name, model), "job"))
            # the bar chart of the group under the cursor: QA out, the average then each attribute
            for model, label in (("stage", "Stage-tuned"), ("mix", "Mix-tuned")):
                assert acc.chart_data[label] == [m[model]["qa_out"][k] for k in ("avg", *ATTRIBUTES)]

            # Probes: fitted in a worker; the table and chart hold what the CLI computes.
            await pilot.press("1")
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("p")
            probes = app.query_one(ProbesPane)
            await pilot.pause()
            assert probes.selected_runs() == [name]
            await pilot.press("f")
            await until(pilot, lambda: probes.results is not None and probes.idle.is_set(), 120, "the probes")
            csv = tmp_path / "cli.csv"
            assert run_cli("--workspace", ws, "probe", name, "--attribute", probes.request.attribute,
                           "--bio", probes.request.bio.removeprefix("bio_"), "--no-cache", "--csv", csv) == 0
            cli = pd.read_csv(csv)
            for model, chart in probes.chart_data.items():
                want = cli[cli["model"] == model].sort_values("layer")
                for key, values in chart["series"].items():
                    np.testing.assert_allclose(values, want[key].to_numpy(), atol=1e-6, err_msg=f"{model} {key}")
            assert set(probes.chart_data) == {"stage", "mix"}
            shown = app.query_one("#probe-table", DataTable)
            assert shown.row_count == len(cli)
            top = cli[(cli["model"] == "mix")].sort_values("layer").iloc[-1]
            rows = [[str(c) for c in shown.get_row_at(i)] for i in range(shown.row_count)]
            assert any(r[0].lower().startswith("mix") and f"{top['delta_rep']:.1f}" in r and f"{top['cka']:.3f}" in r
                       for r in rows), rows
            assert set(COLUMNS) <= set(probes.table_df.columns)

            # Store: its tree, with resid_mid's real shape.
            await pilot.press("1")
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("s")
            pane = app.query_one(StorePane)
            await until(pilot, lambda: pane.run_name == name and pane.nodes, 20, "the store tree")
            import store

            s = store.open(ws / "runs" / name)
            shape = "×".join(map(str, s.to_xarray()["resid_mid"].shape))  # (model, format, layer, attribute, person, hidden)
            assert f"resid_mid {shape} float16" in _labels(app)

            # The log of the finished job.
            await pilot.press("1")
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("l")
            await until(pilot, lambda: any("eval-mix: done" in line for line in app.screen.query_one("#job-out", Log).lines),
                        10, "the job's console in the log screen")
            await pilot.press("escape")
            await pilot.press("q")

    asyncio.run(session())


def _labels(app) -> list[str]:
    from textual.widgets import Tree

    tree = app.query_one("#store-tree", Tree)
    out, todo = [], [tree.root]
    while todo:
        node = todo.pop()
        out.append(str(node.label))
        todo += list(node.children)
    return out


def test_the_tui_process_never_imports_torch():
    code = "import sys, factrecall_tui.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
