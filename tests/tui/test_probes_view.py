"""The Probes pane as a researcher uses it: choose runs, attribute and BIO format, fit, read the
chart and table, and get the same numbers as `factrecall-jobs probe`."""

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from textual.app import App
from textual.widgets import DataTable, Footer, Select, SelectionList, Static

import factrecall_tui.probes as probes_view
from factrecall_tui.probe_chart import ProbeChart
from factrecall_tui.probes import ProbesPane
from factrecall_tui.runs import scan
from jobs.cli import main
from tests.tui.helpers import settle, sites_run

CSS = str(Path(probes_view.__file__).with_name("probes.tcss"))


class Host(App):
    CSS_PATH = CSS

    def __init__(self, workspace: Path, focus: str | None = None):
        super().__init__()
        self.workspace = workspace
        self.focus = focus
        self.notes: list[tuple[str, str]] = []

    def compose(self):
        pane = ProbesPane(id="probes")
        if self.focus:  # the app may call show and focus_run before the pane is mounted
            pane.show(scan(self.workspace))
            pane.focus_run(self.focus)
        yield pane
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ProbesPane).show(scan(self.workspace))

    def notify(self, message, *, title="", severity="information", **kwargs):  # noqa: D102 - remembered for asserts
        self.notes.append((severity, str(message)))
        super().notify(message, title=title, severity=severity, **kwargs)


def _workspace(tiny_run: Path, tmp_path: Path, *names: str) -> Path:
    ws = tmp_path / "ws"
    for name in names or (tiny_run.name,):
        shutil.copytree(tiny_run, ws / "runs" / name, ignore=shutil.ignore_patterns("checkpoints", "run.lock"))
    return ws


def _cli(ws: Path, runs: list[str], attribute: str, bio: str, out: Path) -> pd.DataFrame:
    """What `factrecall-jobs probe` computes (fitted anew: --no-cache), as its CSV."""
    csv = out / f"cli-{attribute}-{bio}.csv"
    assert (
        main(
            [
                "--workspace",
                str(ws),
                "probe",
                *runs,
                "--attribute",
                attribute,
                "--bio",
                bio,
                "--csv",
                str(csv),
                "--out",
                str(out / "probe.png"),
                "--no-cache",
            ]
        )
        == 0
    )
    df = pd.read_csv(csv)
    df.attrs.update(workspace=ws, runs=runs, attribute=attribute, bio=f"bio_{bio}")  # for _cli_cells
    return df


def _cli_cells(df: pd.DataFrame, several: bool = False) -> list[list[str]]:
    """The CLI's table rows (model, layer, its formatted cells), as cmd_probe makes them: from its CSV's
    runs, read back from the stores' caches it filled (the intervals resample each person's outcome)."""
    import store
    from store.probe_tables import frame, row_cells, summary
    from store.probes import ProbeSettings, sweeps

    ws = df.attrs["workspace"]
    runs, models = df.attrs["runs"], list(dict.fromkeys(df["model"]))
    settings = ProbeSettings(attribute=df.attrs["attribute"], bio=df.attrs["bio"])
    found = list(sweeps([store.open(ws / "runs" / r) for r in runs], models, settings, cached_only=True))
    assert frame(found)[df.columns].round(6).equals(df.round(6))  # the very numbers the CLI wrote
    agg = summary(df, found)
    return [
        [model, str(int(r["layer"])), *row_cells(r, several)]
        for model in models
        for _, r in agg[agg["model"] == model].iterrows()
    ]


def _cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _status(pane: ProbesPane) -> str:
    return str(pane.query_one("#probe-status", Static).render())


def _charts(pane: ProbesPane) -> dict[str, ProbeChart]:
    """The charts shown, by model: each holds the title, layers and series it draws."""
    return {chart.model: chart for chart in pane.query(ProbeChart)}


def _visible(pane: ProbesPane) -> list[str]:
    return [model for model, chart in _charts(pane).items() if chart.display]


async def _fit(app: Host, pilot, pane: ProbesPane) -> None:
    """Press f as the researcher does, and wait for the worker and for the pane to show its end."""
    await pilot.press("f")
    await settle(pilot, until=lambda: not pane.busy, what="the fit to end")
    await settle(pilot)


def test_a_fit_shows_the_clis_numbers_and_a_second_one_comes_from_the_cache(tiny_run, tmp_path, monkeypatch):
    ws = _workspace(tiny_run, tmp_path)
    run = tiny_run.name
    cli = _cli(ws, [run], "employer", "short", tmp_path)

    async def session():
        app = Host(ws)
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(ProbesPane)
            await pilot.pause()
            # The newest run with a store is chosen; the researcher picks the attribute from the
            # select (a click, then the next option) and BIO_short with `b`.
            assert pane.selected_runs() == [run]
            await pilot.click("#probe-attribute")
            await pilot.press("down", "enter")
            await pilot.pause()
            assert pane.query_one("#probe-attribute", Select).value == "employer"
            pane.query_one("#probe-runs").focus()
            await pilot.press("b")
            assert pane.query_one("#probe-bio", Select).value == "bio_short"
            await _fit(app, pilot, pane)

            assert "fitted" in _status(pane), _status(pane)
            assert _cells(pane.query_one("#probe-table", DataTable)) == _cli_cells(cli)
            assert pane.query_one("#probe-table", DataTable).ordered_columns[2].label.plain == "Acc(hQA·WQA)"
            assert list(_charts(pane)) == ["stage", "mix", "untrained"]  # the untrained model: the baseline
            for model, chart in _charts(pane).items():
                rows = cli[cli["model"] == model]
                assert chart.chart_layers == rows["layer"].tolist()
                assert list(chart.chart_series) == [
                    "acc_qa_wqa",
                    "acc_bio_wqa",
                    "acc_qa_wbio",
                    "acc_bio_wbio",
                    "delta_rep",
                    "delta_mech",
                ]
                for key, values in chart.chart_series.items():
                    assert values == pytest.approx(rows[key].tolist())
            assert pane.results["acc_qa_wqa"].tolist() == pytest.approx(cli["acc_qa_wqa"].tolist())

            # 80 columns: one model's chart at a time; `m` switches to the other.
            assert _visible(pane) == ["stage"]
            await pilot.press("m")
            assert _visible(pane) == ["mix"]
            # `w`: only W_QA's lines (and the deltas); nothing is fitted again.
            results = pane.results
            await pilot.press("w")
            await pilot.pause()
            assert pane.results is results
            assert list(_charts(pane)["mix"].chart_series) == ["acc_qa_wqa", "acc_bio_wqa", "delta_rep", "delta_mech"]

            # Another attribute: not cached, so the pane says to fit it and keeps showing employer.
            await pilot.press("a")
            await settle(pilot, until=lambda: "f: fit" in _status(pane), what="the pane to say f fits")
            assert pane.query_one("#probe-attribute", Select).value == "blood_type"
            assert pane.request.settings.attribute == "employer"
            await _fit(app, pilot, pane)
            assert pane.request.settings.attribute == "blood_type"

            # From here on no probe may be fitted: what follows comes from the store's cache.
            def no_fit(*args, **kwargs):
                raise AssertionError("fitted although the store has the result")

            import store.probes

            monkeypatch.setattr(store.probes, "fit", no_fit)
            # Back to employer (blood_type -> birth_date -> ... -> employer): shown at once, without f.
            await pilot.press(*"aaaaa")
            assert pane.query_one("#probe-attribute", Select).value == "employer"
            await settle(
                pilot, until=lambda: pane.request.settings.attribute == "employer", what="employer from the cache"
            )
            assert _cells(pane.query_one("#probe-table", DataTable)) == _cli_cells(cli)
            # And f with the same settings: served from the cache.
            shown = pane.results
            await _fit(app, pilot, pane)
            assert pane.results is not shown
            assert "cache" in _status(pane), _status(pane)
            assert _cells(pane.query_one("#probe-table", DataTable)) == _cli_cells(cli)

    asyncio.run(session())


def test_several_runs_are_seeds_mean_and_std_as_the_cli(tiny_run, tmp_path):
    # (Once "seed-[b]", a name that is not markup: a folder factrecall could not have named is no longer
    # listed at all (factrecall_tui/runs.py, jobs.run.spec.is_name); tests/tui/test_crafted_inputs.py
    # shows such text as text wherever it can still come from.)
    ws = _workspace(tiny_run, tmp_path, "seed-a", "seed-b", "seed-c")
    cli = _cli(ws, ["seed-a", "seed-b"], "job", "long", tmp_path)

    async def session():
        app = Host(ws)
        async with app.run_test(size=(200, 50)) as pilot:
            pane = app.query_one(ProbesPane)
            await pilot.pause()
            box = pane.query_one("#probe-runs", SelectionList)
            box.focus()
            pane.focus_run("seed-a")
            box.highlighted = pane.names.index("seed-b")
            await pilot.press("space")
            await pilot.pause()
            assert sorted(pane.selected_runs()) == ["seed-a", "seed-b"]
            await _fit(app, pilot, pane)
            cells = _cells(pane.query_one("#probe-table", DataTable))
            assert cells == _cli_cells(cli, several=True)
            assert "[" in cells[0][2] and "]" in cells[0][2]  # the interval over people and seeds
            assert pane.results["runs"].tolist() == [2] * len(pane.results)
            # A rescan keeps the choice, and a wide terminal shows Stage, Mix and the baseline side by side.
            pane.show(scan(ws))
            await pilot.pause()
            assert sorted(pane.selected_runs()) == ["seed-a", "seed-b"]
            assert _visible(pane) == ["stage", "mix", "untrained"]

    asyncio.run(session())


def test_cancel_stops_the_fit_and_the_pane_stays_usable(tiny_run, tmp_path, monkeypatch):
    ws = _workspace(tiny_run, tmp_path)
    import store.probes

    real_fit, calls = store.probes.fit, []

    def slow_fit(*args, **kwargs):
        calls.append(time.monotonic())
        time.sleep(0.5)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(store.probes, "fit", slow_fit)

    async def session():
        app = Host(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            pane = app.query_one(ProbesPane)
            await pilot.pause()
            pane.query_one("#probe-runs").focus()
            await pilot.press("f")
            await settle(pilot, until=lambda: len(calls) >= 1, what="the first probe fitted")
            assert "fitting" in _status(pane)
            await pilot.press("escape")
            await pilot.pause()
            assert "cancelled" in _status(pane)
            await settle(pilot, until=pane.idle.is_set, what="the cancelled fit's thread to stop")
            await pilot.pause(0.1)
            # 2 layers x 2 models x 2 probes would be 8 fits; the thread stopped after the first layer.
            assert len(calls) <= 4
            assert pane.results is None and not _charts(pane)
            assert "cancelled" in _status(pane)
            # Usable: a fit now runs to the end.
            monkeypatch.setattr(store.probes, "fit", real_fit)
            await _fit(app, pilot, pane)
            assert pane.results is not None and "fitted" in _status(pane)

    asyncio.run(session())


def test_runs_without_a_store_and_broken_stores_say_so(tiny_run, tmp_path):
    import zarr

    ws = _workspace(tiny_run, tmp_path, "good", "broken", "undumped")
    shutil.rmtree(ws / "runs" / "broken" / "activations.zarr" / "label")
    written = zarr.open_array(str(ws / "runs" / "undumped" / "activations.zarr" / "written"), mode="r+")
    written[...] = False  # a dump that has not written any model yet
    bare = ws / "runs" / "bare"
    bare.mkdir()
    (bare / "spec.json").write_text((tiny_run / "spec.json").read_text())

    async def session():
        app = Host(ws, focus="broken")
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(ProbesPane)
            await pilot.pause()
            assert sorted(pane.names) == ["broken", "good", "undumped"]  # only runs with a store are offered
            assert pane.selected_runs() == ["broken"]  # focus_run before mounting took effect
            pane.focus_run("bare")
            assert "no activation store" in _status(pane)
            assert pane.selected_runs() == ["broken"]
            pane.query_one("#probe-runs").focus()
            await _fit(app, pilot, pane)
            assert "truncated" in _status(pane) and pane.results is None
            assert app.notes and app.notes[-1][0] == "error"
            pane.focus_run("undumped")
            await pilot.pause()
            await _fit(app, pilot, pane)
            assert "no dumped trained model" in _status(pane) and pane.results is None
            pane.focus_run("good")
            await pilot.pause()
            await _fit(app, pilot, pane)
            assert pane.results is not None

    asyncio.run(session())


def test_importing_the_pane_does_not_import_torch():
    code = "import sys, factrecall_tui.probes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_i_shows_the_interventions_the_stores_hold_as_the_patch_command_prints_them(tiny_run, tmp_path):
    """`i` turns the Probes screen to the interventions: the stores' cached `factrecall-jobs patch`
    results, cell for cell the CLI's (from the same cache), and for a run without them the command that
    computes them; `i` again brings the probes back."""
    import store
    from store.interventions import COLUMNS, frame, latest, summary
    from store.probe_tables import format_cell

    ws = tmp_path / "ws"
    shutil.copytree(tiny_run, ws / "runs" / tiny_run.name, ignore=shutil.ignore_patterns("run.lock"))
    shutil.copytree(tiny_run, ws / "runs" / "other", ignore=shutil.ignore_patterns("checkpoints", "run.lock"))
    assert main(["--workspace", str(ws), "patch", tiny_run.name, "--out", str(tmp_path / "p.png")]) == 0
    s = store.open(ws / "runs" / tiny_run.name)
    found = [(tiny_run.name, latest(s, "job", m)) for m in ("stage", "mix")]
    agg = summary(frame(found), [r for _, r in found])
    expected = [
        [m, str(int(r["layer"])), *(format_cell(r, c, False) for c in COLUMNS)]
        for m in ("stage", "mix")
        for _, r in agg[agg["model"] == m].iterrows()
    ]

    async def session():
        app = Host(ws)
        async with app.run_test(size=(160, 40)) as pilot:
            pane = app.query_one(ProbesPane)
            await pilot.pause()
            pane.focus_run(tiny_run.name)
            box = pane.query_one("#probe-runs", SelectionList)
            box.focus()
            box.deselect_all()
            box.select(tiny_run.name)
            await pilot.pause()
            assert pane.selected_runs() == [tiny_run.name]
            await pilot.press("i")
            view = pane.query_one("#patch-view")
            await settle(pilot, until=lambda: view.table is not None and view.table.rows, what="the interventions")
            assert view.display and not pane.query_one("#probe-table").display
            assert _cells(pane.query_one("#patch-table", DataTable)) == expected
            caption = str(pane.query_one("#patch-caption", Static).render())
            assert "8 qa_out people" in caption and "factrecall-jobs patch" in caption
            # Another run, none cached: the caption says what computes them.
            box.deselect_all()
            box.select("other")
            await settle(pilot, until=lambda: view.table is not None and not view.table.rows, what="the other run's")
            assert "p computes them (`factrecall-jobs patch other --attribute job`" in str(
                pane.query_one("#patch-caption", Static).render()
            )
            # ... and p does, as a process; "other" has no checkpoints here: the caption says why in one line.
            await pilot.press("p")
            await settle(
                pilot,
                until=lambda: "failed" in str(pane.query_one("#patch-caption", Static).render()),
                what="the patch process to fail",
            )
            assert "checkpoints/stage/final is missing" in str(pane.query_one("#patch-caption", Static).render())
            # The run with checkpoints, another attribute: p computes it, and the view shows it.
            box.deselect_all()
            box.select(tiny_run.name)
            pane.query_one("#probe-attribute", Select).value = "blood_type"
            await settle(
                pilot,
                until=lambda: view.table is not None and not view.table.rows and "blood_type" in view.table.caption,
                what="blood_type's absence",
            )
            await pilot.press("p")
            await settle(
                pilot, until=lambda: view.table is not None and bool(view.table.rows), what="the computed interventions"
            )
            assert latest(store.open(ws / "runs" / tiny_run.name), "blood_type", "mix") is not None
            await pilot.press("i")
            assert not view.display and pane.query_one("#probe-table").display

    asyncio.run(session())


def _caption(pane: ProbesPane) -> str:
    return str(pane.query_one("#probe-caption", Static).render())


def test_the_site_is_chosen_from_those_the_stores_hold_and_a_fit_gives_that_site_s_numbers(tiny_run, tmp_path):
    """A store dumped at several sites: the form offers the sites the chosen stores hold (a list, never
    typed; resid_mid@last where they hold it, else the first), the caption names the site fitted, and
    each site's numbers are `store.probes.sweep`'s for that site, and differ from the other's."""
    import store
    from store.names import PROBE_COLUMNS
    from store.probes import sweep
    from store.settings import ProbeSettings

    ws = tmp_path / "ws"
    sites_run(tiny_run, ws, "sites", "mlp_out@subject_last,resid_mid@last")  # resid_mid@last not first
    sites_run(tiny_run, ws, "other", "attn_out@last,mlp_out@subject_last", age=10)  # no resid_mid@last
    shown: dict[str, pd.DataFrame] = {}

    async def session():
        app = Host(ws)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ProbesPane)
            await settle(pilot)
            site = pane.query_one("#probe-site", Select)
            assert not pane.query("Input#probe-site")  # a list of the store's sites, not a text box
            assert pane.selected_runs() == ["sites"]
            assert pane.form.values("site") == ("mlp_out@subject_last", "resid_mid@last")
            assert site.value == "resid_mid@last"  # the paper's site, where the store holds it

            async def tick(name: str) -> None:  # space on the run's line, as the researcher does
                box = pane.query_one("#probe-runs", SelectionList)
                box.focus()
                box.highlighted = pane.names.index(name)
                await pilot.press("space")
                await settle(pilot)

            await tick("sites")
            await tick("other")  # a store without resid_mid@last: its first site
            assert pane.selected_runs() == ["other"]
            assert pane.form.values("site") == ("attn_out@last", "mlp_out@subject_last")
            assert site.value == "attn_out@last"
            await tick("sites")  # both: the sites they share
            assert pane.selected_runs() == ["sites", "other"]
            assert pane.form.values("site") == ("mlp_out@subject_last",) and site.value == "mlp_out@subject_last"
            await tick("other")  # and back to one: the site chosen is kept where it still is one
            assert pane.form.values("site") == ("mlp_out@subject_last", "resid_mid@last")
            assert site.value == "mlp_out@subject_last"

            await _fit(app, pilot, pane)
            assert "fitted" in _status(pane), _status(pane)
            assert "site mlp_out@subject_last" in _caption(pane)
            assert pane.request.settings.site == "mlp_out@subject_last"
            shown["mlp_out@subject_last"] = pane.results.copy()
            cells = _cells(pane.query_one("#probe-table", DataTable))

            # The researcher picks the other site from the list (a click, then the option above).
            await pilot.click("#probe-site")
            await pilot.press("down", "enter")
            await settle(pilot, until=lambda: "f: fit" in _status(pane), what="the pane to say f fits")
            assert site.value == "resid_mid@last"
            assert "shown: the previous settings" in _caption(pane) and "site mlp_out@subject_last" in _caption(pane)
            await _fit(app, pilot, pane)
            assert "site resid_mid@last" in _caption(pane) and "previous" not in _caption(pane)
            assert pane.request.settings.site == "resid_mid@last"
            shown["resid_mid@last"] = pane.results.copy()
            assert _cells(pane.query_one("#probe-table", DataTable)) != cells

    asyncio.run(session())

    s = store.open(ws / "runs" / "sites")
    numbers = {}
    for site, results in shown.items():
        assert results["model"].tolist() == ["mix", "mix"]  # the one model dumped, over its 2 layers
        rows = pd.DataFrame(sweep(s, "mix", ProbeSettings(site=site), cache=False))  # fitted anew
        assert results["layer"].tolist() == rows["layer"].tolist()
        for column in PROBE_COLUMNS:
            assert results[column].tolist() == pytest.approx(rows[column].tolist(), abs=1e-9), (site, column)
        numbers[site] = rows[list(PROBE_COLUMNS)].to_numpy()
    assert not np.allclose(numbers["resid_mid@last"], numbers["mlp_out@subject_last"])
