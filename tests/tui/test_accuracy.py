"""The Accuracy pane as a researcher uses it: Figure 1 and Figure 5 across runs, seeds folded into
mean ± std exactly as `factrecall-jobs show` prints them, and the chart of the row under the cursor."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from textual.app import App
from textual.widgets import DataTable, Footer

import factrecall_tui
from factrecall_tui.accuracy import AccuracyPane
from factrecall_tui.accuracy_tables import row_key
from factrecall_tui.runs import scan
from jobs.run.tables import cell, load_groups, strategy_curve
from jobs.words import ATTRIBUTE_LABELS, ATTRIBUTES, MODEL_LABELS
from tests.helpers import metrics
from tests.tui.helpers import settle

SETS = ("bio", "qa_in", "qa_out")
# Seed 1's numbers: real, different ones, so mean and std are not trivial.
SEED1_STAGE_OUT = dict(zip(ATTRIBUTES, (70.0, 20.0, 10.0, 5.0, 0.0, 35.0)))
SEED1_MIX_OUT = dict(zip(ATTRIBUTES, (90.0, 65.0, 55.0, 40.0, 30.0, 20.0)))


class Host(App):
    CSS_PATH = str(Path(factrecall_tui.__file__).parent / "accuracy.tcss")

    def compose(self):
        yield AccuracyPane(id="accuracy")
        yield Footer()


def _run(workspace: Path, name: str, spec: dict, m: dict, age: int) -> Path:
    folder = workspace / "runs" / name
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    (folder / "metrics.json").write_text(json.dumps(m))
    t = 1_700_000_000 - age  # scan orders by spec.json's time, newest first
    os.utime(folder / "spec.json", (t, t))
    return folder


def _workspace(tiny_run: Path, root: Path) -> tuple[Path, list[Path]]:
    """Two seeds of one configuration (seed 1's numbers edited), a baseline-only run and a run whose
    spec is not a valid spec."""
    spec, m0 = json.loads((tiny_run / "spec.json").read_text()), metrics(tiny_run)
    ws = root / "ws"
    s0 = _run(ws, "tiny-stage+mix-s0", spec, m0, age=20)
    m1 = json.loads(json.dumps(m0))
    for model, out in (("stage", SEED1_STAGE_OUT), ("mix", SEED1_MIX_OUT)):
        m1[model]["qa_out"] = {"avg": float(np.mean(list(out.values()))), **out}
    m1["mix"]["bio"]["avg"] = 91.5
    s1 = _run(ws, "tiny-stage+mix-s1", {**spec, "seed": 1}, m1, age=10)
    _run(ws, "baseline-s2", {**spec, "seed": 2}, {k: m0[k] for k in ("majority", "untrained")}, age=30)
    _run(ws, "odd-s0", {**spec, "seed": -1}, m0, age=40)
    return ws, [s1, s0]


def _cells(table: DataTable, key: str) -> list[str]:
    return [str(c) for c in table.get_row(key)]


def _mean_part(text: str) -> str:
    return text.split(" ± ")[0]


def test_figures_fold_seeds_like_the_cli_and_the_chart_follows_the_cursor(tiny_run, tmp_path):
    ws, seeds = _workspace(tiny_run, tmp_path)
    m0, m1 = (json.loads((p / "metrics.json").read_text()) for p in reversed(seeds))
    (group,) = load_groups(seeds)  # what `factrecall-jobs show` folds
    label = "tiny-stage+mix-s*"
    assert group.label == label

    async def session():
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(AccuracyPane)
            pane.show(scan(ws))
            await settle(pilot)
            fig1, fig5 = app.query_one("#acc-fig1", DataTable), app.query_one("#acc-fig5", DataTable)
            # One group: the baseline-only run is not shown, the run with a bad spec is named.
            assert [str(fig1.get_row_at(i)[1]) for i in range(fig1.row_count)] == list(MODEL_LABELS.values())[:5]
            assert str(fig1.get_row_at(0)[0]) == label and str(fig1.get_row_at(1)[0]) == ""
            assert "odd-s0" in pane.message and "1 configuration · 2 runs" in pane.message

            # Figure 1: every cell is the CLI's string, and the mean ± std numpy gives.
            for model in ("stage", "mix"):
                row = _cells(fig1, row_key(label, model))
                assert row[1] == MODEL_LABELS[model] and row[-1] == "0, 1"
                for col, attr in enumerate(("avg", *ATTRIBUTES), start=2):
                    values = [m0[model]["qa_out"][attr], m1[model]["qa_out"][attr]]
                    assert row[col] == cell(group.values(model, "qa_out", attr), 2)
                    assert row[col] == f"{np.mean(values):.1f} ± {np.std(values):.1f}"
            stage_job = [m0["stage"]["qa_out"]["job"], 5.0]
            assert (
                _cells(fig1, row_key(label, "stage"))[2 + 1 + ATTRIBUTES.index("job")]
                == f"{np.mean(stage_job):.1f} ± {np.std(stage_job):.1f}"
            )
            # Figure 5 likewise.
            for model in ("majority", "bio", "stage", "mix"):
                assert _cells(fig5, row_key(label, model))[2:5] == [
                    cell(group.values(model, s, "avg"), 2) for s in SETS
                ]
            assert (
                _cells(fig5, row_key(label, "mix"))[2] == f"{np.mean([m0['mix']['bio']['avg'], 91.5]):.1f} ± "
                f"{np.std([m0['mix']['bio']['avg'], 91.5]):.1f}"
            )

            # The researcher walks down to Stage-tuned: the chart shows that group's trained models,
            # per attribute, with the table's numbers.
            fig1.focus()
            await pilot.press("down", "down", "down")
            await pilot.pause()
            assert fig1.cursor_row == 3
            assert pane.chart_labels == ["Ave", *(ATTRIBUTE_LABELS[a] for a in ATTRIBUTES)]
            assert list(pane.chart_data) == ["BIO-tuned", "Stage-tuned", "Mix-tuned"]
            for model in ("bio", "stage", "mix"):
                row = _cells(fig1, row_key(label, model))[2:9]
                assert [f"{v:.1f}" for v in pane.chart_data[MODEL_LABELS[model]]] == [_mean_part(c) for c in row]
            assert label in pane.chart_title

            # f: Figure 5, in the table (a short terminal shows one) and in the chart.
            await pilot.press("f")
            await pilot.pause()
            assert pane.figure == "fig5" and fig5.display and not fig1.display
            assert fig5.cursor_row == 3  # the cursor came along
            assert pane.chart_labels == ["BIO", "QA in", "QA out"]
            for model in ("bio", "stage", "mix"):
                row = _cells(fig5, row_key(label, model))[2:5]
                assert [f"{v:.1f}" for v in pane.chart_data[MODEL_LABELS[model]]] == [_mean_part(c) for c in row]

            # A rescan with nothing new keeps the cursor; a third seed changes the numbers, not the row.
            pane.show(scan(ws))
            await settle(pilot)
            assert fig5.cursor_row == 3
            shutil.copytree(seeds[1], ws / "runs" / "tiny-stage+mix-s2")
            spec2 = json.loads((seeds[1] / "spec.json").read_text())
            (ws / "runs" / "tiny-stage+mix-s2" / "spec.json").write_text(json.dumps({**spec2, "seed": 2}))
            pane.show(scan(ws))
            await settle(pilot)
            assert fig5.cursor_row == 3 and pane.chart_data  # still on Stage-tuned
            stage_out = [m0["stage"]["qa_out"]["avg"], m1["stage"]["qa_out"]["avg"], m0["stage"]["qa_out"]["avg"]]
            assert _cells(fig5, row_key(label, "stage"))[4] == f"{np.mean(stage_out):.1f} ± {np.std(stage_out):.1f}"
            assert _cells(fig5, row_key(label, "stage"))[-1] == "0, 1, 2"

            # Nothing trained: the pane says so.
            pane.show([r for r in scan(ws) if r.name == "baseline-s2"])
            await settle(pilot)
            assert fig1.row_count == 0 and pane.chart_data == {}
            assert "No run has a trained model" in pane.message

    asyncio.run(session())


def test_focus_run_and_a_tall_terminal(tiny_run, tmp_path):
    ws, _ = _workspace(tiny_run, tmp_path)
    spec, m0 = json.loads((tiny_run / "spec.json").read_text()), metrics(tiny_run)
    mix_only = {**spec, "strategies": ["mix"]}
    _run(ws, "tiny-mix-s0", mix_only, {k: m0[k] for k in ("majority", "untrained", "mix")}, age=0)

    async def session():
        app = Host()
        async with app.run_test(size=(150, 50)) as pilot:
            pane = app.query_one(AccuracyPane)
            pane.focus_run("tiny-stage+mix-s1")  # before the first result: done once it is in
            pane.show(scan(ws))
            await settle(pilot)
            fig1, fig5 = app.query_one("#acc-fig1", DataTable), app.query_one("#acc-fig5", DataTable)
            assert fig1.display and fig5.display  # tall enough for both
            # Newest first: the Mix-only configuration's three rows, then the two-seed group's five.
            assert fig1.row_count == 8
            assert fig1.cursor_row == fig1.get_row_index(row_key("tiny-stage+mix-s*", "bio"))
            assert list(pane.chart_data) == ["BIO-tuned", "Stage-tuned", "Mix-tuned"]
            pane.focus_run("tiny-mix-s0")
            # The other table follows through a posted event.
            await settle(pilot, until=lambda: fig5.cursor_row == 2, what="Figure 5's cursor to follow")
            assert fig1.cursor_row == fig1.get_row_index(row_key("tiny-mix-s0", "mix")) == 2
            assert fig5.cursor_row == 2
            assert list(pane.chart_data) == ["Mix-tuned"]
            assert pane.chart_data["Mix-tuned"][0] == m0["mix"]["qa_out"]["avg"]

    asyncio.run(session())


def test_the_panes_never_import_torch_or_zarr_at_import():
    code = (
        "import sys, factrecall_tui.accuracy, factrecall_tui.store_view; "
        "print('torch' in sys.modules, 'zarr' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_t_draws_each_model_s_accuracy_over_training_as_plot_does(tiny_run, tmp_path):
    """t: the chart shows the group's exact match over training, one panel per set and a line per trained
    model, the mean over seeds of what each logged (`factrecall-jobs plot`'s numbers); t again, the bars."""
    ws, seeds = _workspace(tiny_run, tmp_path)
    spec, m0 = json.loads((tiny_run / "spec.json").read_text()), metrics(tiny_run)
    _run(
        ws, "tiny-mix-s0", {**spec, "strategies": ["mix"]}, {k: m0[k] for k in ("majority", "untrained", "mix")}, age=0
    )
    logged = [json.loads((p / "metrics.json").read_text()) for p in seeds]

    async def session():
        app = Host()
        async with app.run_test(size=(150, 50)) as pilot:
            pane = app.query_one(AccuracyPane)
            pane.show(scan(ws))
            await settle(pilot)
            pane.focus_run("tiny-stage+mix-s1")
            await settle(pilot)
            await pilot.press("t")
            assert pane.chart == "curves" and set(pane.chart_curves) == {"Stage-tuned", "Mix-tuned"}
            for strategy in ("stage", "mix"):
                curve = pane.chart_curves[MODEL_LABELS[strategy]]
                lines = [strategy_curve(m, strategy) for m in logged]
                length = min(len(steps) for steps, _, _ in lines)
                assert curve.steps == list(lines[0][0][:length]) and curve.seeds == 2
                for s in SETS:
                    np.testing.assert_allclose(curve.means[s], np.mean([a[s][:length] for _, a, _ in lines], axis=0))
            stage = pane.chart_curves["Stage-tuned"]
            assert stage.switch == m0["train"]["bio"]["steps"] and pane.chart_curves["Mix-tuned"].switch is None
            assert stage.means["qa_out"][0] == m0["untrained"]["qa_out"]["avg"]  # from the untrained model
            assert "Over training · tiny-stage+mix-s* · mean of 2 seeds" in pane.chart_title

            pane.focus_run("tiny-mix-s0")  # its metrics have no curve: said, not drawn
            await settle(pilot)
            assert pane.chart_curves == {} and "no training curve logged" in pane.chart_title
            await pilot.press("t")
            assert pane.chart == "bars" and list(pane.chart_data) == ["Mix-tuned"]

    asyncio.run(session())


def test_the_tables_of_many_runs_cost_one_spec_read_and_one_hash_a_run(tmp_path, monkeypatch):
    """What made the first visit to Accuracy take seconds at 300 runs, counted rather than timed: a
    Faker made for every spec validated (the locale check), every spec read twice, and a config hash
    recomputed for every earlier run of the same configuration when grouping (quadratic). Now each
    run's spec is read once and hashed once, and faker is asked about a locale once a process."""
    import faker

    import jobs.run.folder as folder
    import jobs.run.spec as spec_module
    from factrecall_tui.accuracy_tables import build_tables
    from tests.tui.workspace import fixed_workspace

    ws = fixed_workspace(tmp_path / "ws")
    src = ws / "runs" / "cpu-stage+mix-s0"
    for i in range(40):  # 40 copies of one run: one configuration, one seed, so 40 groups of one
        dst = ws / "runs" / f"copy-{i:02d}"
        dst.mkdir()
        for f in ("spec.json", "metrics.json"):
            (dst / f).write_bytes((src / f).read_bytes())
    paths = sorted((ws / "runs").iterdir())
    counts = {"load_spec": 0, "config_hash": 0, "Faker": 0}

    def counted(name, real):
        def call(*a, **k):
            counts[name] += 1
            return real(*a, **k)

        return call

    monkeypatch.setattr("factrecall_tui.accuracy_tables.load_spec", counted("load_spec", folder.load_spec))
    monkeypatch.setattr("jobs.run.tables.load_spec", counted("load_spec", folder.load_spec))
    monkeypatch.setattr(
        spec_module.ExperimentSpec, "config_hash", counted("config_hash", spec_module.ExperimentSpec.config_hash)
    )
    monkeypatch.setattr(faker, "Faker", counted("Faker", faker.Faker))
    spec_module._locale_problem.cache_clear()
    tables = build_tables(paths)
    assert len(tables.groups) >= 40
    assert counts["load_spec"] == len(paths) and counts["config_hash"] == len(paths)
    assert counts["Faker"] <= 1
