"""A researcher's whole session in the app: launch a small job from the form, watch it finish, read
its accuracies, fit probes on its store and find the CLI's numbers, browse the store, read the log."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pandas as pd
from textual.widgets import DataTable, Input, Log, ProgressBar, Static

import factrecall_tui.accuracy
import factrecall_tui.probes
from factrecall_tui.accuracy import AccuracyPane
from factrecall_tui.accuracy_tables import row_key
from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.launch import LaunchScreen
from factrecall_tui.probe_chart import ProbeChart
from factrecall_tui.probes import ProbesPane
from factrecall_tui.remembered import Remembered
from factrecall_tui.store_view import StorePane
from jobs.run.spec import preset_names
from jobs.run.tables import cell
from jobs.words import ATTRIBUTES, MODEL_LABELS
from store.names import PROBE_COLUMNS
from tests.helpers import metrics, run_cli
from tests.tui.helpers import settle
from tests.tui.test_jobs import status_of
from tests.tui.workspace import fixed_workspace


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
            presets = preset_names()  # in the order the list shows them, from the form's start
            await pilot.press(*["down"] * (presets.index("tiny") - presets.index(app.screen.start["preset"])), "enter")
            people = app.screen.query_one("#people", Input)
            people.focus()
            await pilot.press("8")
            await pilot.pause()
            assert name in str(app.screen.query_one("#plan").render())
            await pilot.click("#launch-button")
            await settle(
                pilot, until=lambda: status_of(app, name) in ("queued", "running"), what="the job to be listed"
            )
            assert app.query_one(JobsPane).selected.name == name
            # The form's values are remembered for the next one (not the name: factrecall_tui/remembered.py).
            assert {
                "preset": "tiny",
                "people": "8",
                "strategies": ["stage", "mix"],
            }.items() <= Remembered().launch().items()
            await settle(pilot, until=lambda: status_of(app, name) == "done", what="the job to finish")
            assert "all steps done" in str(app.query_one("#jobs-table", DataTable).get_cell(name, "progress"))
            m = metrics(ws / "runs" / name)

            # Accuracy: the same strings as `factrecall-jobs show`, and the chart's bars are the numbers.
            await pilot.press("a")
            acc = app.query_one(AccuracyPane)
            await settle(pilot, until=lambda: acc.groups, what="the accuracy tables")
            fig1 = app.query_one("#acc-fig1", DataTable)
            for model in ("stage", "mix"):
                row = fig1.get_row(row_key(name, model))
                assert cell([m[model]["qa_out"]["avg"]], 1) in [str(c) for c in row]
                assert cell([m[model]["qa_out"]["job"]], 1) == str(fig1.get_cell(row_key(name, model), "job"))
            # the bar chart of the group under the cursor: QA out, the average then each attribute
            for model in ("stage", "mix"):
                assert acc.chart_data[MODEL_LABELS[model]] == [m[model]["qa_out"][k] for k in ("avg", *ATTRIBUTES)]

            # Probes: fitted in a worker; the table and chart hold what the CLI computes.
            await pilot.press("1")
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("p")
            probes = app.query_one(ProbesPane)
            await settle(pilot, until=lambda: probes.selected_runs() == [name], what="the run chosen for probing")
            await pilot.press("f")
            await settle(pilot, until=lambda: probes.results is not None and probes.idle.is_set(), what="the probes")
            csv = tmp_path / "cli.csv"
            assert (
                run_cli(
                    "--workspace",
                    ws,
                    "probe",
                    name,
                    "--attribute",
                    probes.request.settings.attribute,
                    "--bio",
                    probes.request.settings.bio.removeprefix("bio_"),
                    "--no-cache",
                    "--csv",
                    csv,
                )
                == 0
            )
            cli = pd.read_csv(csv)
            charts = {chart.model: chart for chart in probes.query(ProbeChart)}
            for model, chart in charts.items():
                want = cli[cli["model"] == model].sort_values("layer")
                for key, values in chart.chart_series.items():
                    np.testing.assert_allclose(values, want[key].to_numpy(), atol=1e-6, err_msg=f"{model} {key}")
            assert set(charts) == {"stage", "mix", "untrained"}  # the untrained model: the baseline
            shown = app.query_one("#probe-table", DataTable)
            assert shown.row_count == len(cli)
            top = cli[(cli["model"] == "mix")].sort_values("layer").iloc[-1]
            rows = [[str(c) for c in shown.get_row_at(i)] for i in range(shown.row_count)]
            numbers = lambda r: [c.split(" [")[0] for c in r]  # noqa: E731 - a cell: the number, then its interval
            assert any(
                r[0].lower().startswith("mix")
                and f"{top['delta_rep']:.1f}" in numbers(r)
                and f"{top['cka']:.3f}" in numbers(r)
                for r in rows
            ), rows
            assert set(PROBE_COLUMNS) <= set(probes.results.columns)
            # e: the same numbers as CSV, in WORKSPACE/exports and on the clipboard.
            await pilot.press("e")
            await settle(pilot, until=lambda: list((ws / "exports").glob("probes-*.csv")), what="the export")
            exported = pd.read_csv(next((ws / "exports").glob("probes-*.csv")))
            for model in ("stage", "mix"):
                got = exported[exported["model"] == model].sort_values("layer")
                want = cli[cli["model"] == model].sort_values("layer")
                np.testing.assert_allclose(got["delta_rep"], want["delta_rep"], atol=1e-6)

            # Store: its tree, with resid_mid's real shape.
            await pilot.press("1")
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("s")
            pane = app.query_one(StorePane)
            await settle(pilot, until=lambda: pane.run_name == name and pane.nodes, what="the store tree")
            import store

            s = store.open(ws / "runs" / name)
            shape = "×".join(
                map(str, s.to_xarray()["resid_mid"].shape)
            )  # (model, format, layer, attribute, person, hidden)
            assert f"resid_mid {shape} float16" in _labels(app)

            # The log of the finished job.
            await pilot.press("1")
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("l")
            await settle(
                pilot,
                until=lambda: any("eval-mix: done" in line for line in app.screen.query_one("#job-out", Log).lines),
                what="the job's console in the log screen",
            )
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


def test_an_unexpected_failure_in_a_pane_is_one_notification_and_the_pane_stays_usable(tmp_path, monkeypatch):
    """A worker's failure that no pane expects reaches the app's one handler: a notification of one
    line, never a crash; the Probes pane, whose fit it was, is free again."""
    ws = fixed_workspace(tmp_path / "ws")

    def boom(*args, **kwargs):
        raise RuntimeError("boom\nand a second line")

    monkeypatch.setattr(factrecall_tui.accuracy, "build_tables", boom)
    monkeypatch.setattr(factrecall_tui.probes, "compute", boom)

    async def session():
        app = FactrecallApp(ws, scan_every=0)
        app.notes, shown = [], app.notify

        def notify(message, **kwargs):  # remembered for asserts, and shown
            app.notes.append((kwargs.get("severity", "information"), str(message)))
            shown(message, **kwargs)

        app.notify = notify
        async with app.run_test(size=(110, 32)) as pilot:
            await settle(
                pilot,
                until=lambda: ("error", "accuracy-load: RuntimeError: boom") in app.notes,
                what="the Accuracy pane's failure as a notification",
            )
            app.open_run("probes", "cpu-stage+mix-s0")
            await settle(pilot)
            await pilot.press("f")
            await settle(
                pilot,
                until=lambda: ("error", "probes: RuntimeError: boom") in app.notes,
                what="the fit's failure as a notification",
            )
            pane = app.query_one(ProbesPane)
            await settle(pilot, until=lambda: not pane.busy, what="the Probes pane to be free")
            assert not pane.query_one("#probe-progress", ProgressBar).display
            assert "boom" in str(pane.query_one("#probe-status", Static).render())

    asyncio.run(session())
