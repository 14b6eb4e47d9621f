"""The Jobs table as a researcher with many runs uses it: `/` filters (by words, or field:value), `o` or
a header click sorts, `e` exports what is shown, `x` archives and `D` deletes (each asked first). The
filter and sort alone first (factrecall_tui/run_view.py), then the same through the app."""

from __future__ import annotations

import csv
import io

import pytest
from textual.widgets import DataTable, Input

from factrecall_tui.accuracy import AccuracyPane
from factrecall_tui.compare_view import CompareScreen
from factrecall_tui.confirm import Confirm
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.run_view import FilterError, visible
from factrecall_tui.runs import scan
from jobs.run.files import atomic_write_json
from jobs.run.tables import comparison
from tests.tui.helpers import settle
from tests.tui.test_review import drive
from tests.tui.workspace import _metrics, _run, fixed_workspace

# The fixed workspace, newest first: its runs' statuses (tests/tui/workspace.py).
ALL = [
    "tiny-stage+mix-s1",
    "tiny-qa-s0",
    "tiny-bio-s0",
    "tiny-stage-s0",
    "tiny-mix-s0",
    "cpu-stage+mix-s0",
    "cpu-stage+mix-s1",
    "cpu-stage+mix-s2",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return scan(fixed_workspace(tmp_path_factory.mktemp("list") / "ws"))


def names(runs, *args, **kwargs) -> list[str]:
    return [r.name for r in visible(runs, *args, **kwargs)]


def test_the_filter_matches_words_and_fields_and_negations(runs):
    assert names(runs) == ALL  # no filter: every run, newest first
    assert names(runs, "MIX") == [
        "tiny-stage+mix-s1",
        "tiny-mix-s0",
        "cpu-stage+mix-s0",
        "cpu-stage+mix-s1",
        "cpu-stage+mix-s2",
    ]
    assert names(runs, "status:failed") == ["tiny-mix-s0"]
    assert names(runs, "strategy:mix seed:1") == ["tiny-stage+mix-s1", "cpu-stage+mix-s1"]
    assert names(runs, "seed:1") == ["tiny-stage+mix-s1", "cpu-stage+mix-s1"]  # exactly: not 10, 11
    assert names(runs, "preset:cpu -seed:0") == ["cpu-stage+mix-s1", "cpu-stage+mix-s2"]
    assert names(runs, "-status:done -tiny") == []
    assert names(runs, "nothing-like-it") == []
    with pytest.raises(FilterError, match="colour: is not a field; filter by name:, status:"):
        visible(runs, "colour:red")


def test_the_sorts_order_by_what_needs_a_look_first_and_by_numbers_as_numbers(runs):
    by_status = [r.status for r in visible(runs, sort="status")]
    assert by_status == sorted(
        by_status, key=["running", "queued", "failed", "broken", "stopped", "interrupted", "new", "done"].index
    )
    assert by_status[0] == "queued" and by_status[-1] == "done"
    assert names(runs, sort="run") == sorted(ALL)
    assert names(runs, sort="run", reverse=True) == sorted(ALL, reverse=True)
    seeds = [r.seed for r in visible(runs, sort="seed")]
    assert seeds == sorted(seeds, key=int)
    # Ties keep the scan's order (newest first): the sort is stable.
    assert [r.name for r in visible(runs, sort="seed") if r.seed == "0"] == [n for n in ALL if n.endswith("s0")]


def shown(app) -> list[str]:
    """The runs the Jobs table shows, in order."""
    table = app.query_one("#jobs-table", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def test_filter_sort_export_and_archive_from_the_jobs_table(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")

    async def script(app, pilot):
        jobs = app.query_one(JobsPane)
        assert shown(app) == ALL and not app.query_one("#jobs-filter-row").display
        # Back on Jobs, the keys go to the runs, never to the hidden filter field (which would eat them).
        await pilot.press("2", "1")
        await settle(pilot)
        assert app.focused is app.query_one("#jobs-table")
        await pilot.press("slash")
        assert app.focused is app.query_one("#jobs-filter", Input)
        await pilot.press(*"status:done")
        await settle(
            pilot,
            until=lambda: shown(app) == ["cpu-stage+mix-s0", "cpu-stage+mix-s1", "cpu-stage+mix-s2"],
            what="the filtered rows",
        )
        assert str(app.query_one("#jobs-shown").render()) == "3 of 8 runs"
        await pilot.press("enter")  # keeps the filter, back to the runs: keys act on them again
        assert app.focused is app.query_one("#jobs-table")
        await pilot.press("o", "o")  # newest → run → status
        assert jobs.sort == "status" and "by status" in str(app.query_one("#jobs-shown").render())

        # A header click sorts by that column, a second one reverses it.
        await pilot.click("#jobs-table", offset=(2, 0))  # the Run header
        await settle(pilot)
        assert jobs.sort == "run" and shown(app) == sorted(shown(app))
        await pilot.click("#jobs-table", offset=(2, 0))
        await settle(pilot)
        assert jobs.reverse and shown(app) == sorted(shown(app), reverse=True)

        # e: the table as shown, as CSV, in WORKSPACE/exports and on the clipboard.
        await pilot.press("e")
        await settle(pilot, until=lambda: list((ws / "exports").glob("jobs-*.csv")), what="the export")
        exported = next((ws / "exports").glob("jobs-*.csv")).read_text()
        rows = list(csv.reader(io.StringIO(exported)))
        assert rows[0][:3] == ["Run", "Status", "Progress"]
        assert [r[0] for r in rows[1:]] == shown(app) and {r[1] for r in rows[1:]} == {"done"}
        assert app.clipboard == exported

        # A bad field is said, and hides nothing.
        await pilot.press("slash", "ctrl+u", *"colour:red")
        await settle(
            pilot,
            until=lambda: "is not a field" in str(app.query_one("#jobs-shown").render()),
            what="the filter's complaint",
        )
        assert len(shown(app)) == 8
        await pilot.press("escape")  # no filter; the sort stays
        assert app.query_one("#jobs-filter", Input).value == "" and len(shown(app)) == 8
        assert app.focused is app.query_one("#jobs-table")

        # Filtered out, then asked for by name (a launch, or another tab): the filter makes way.
        await pilot.press("slash", *"status:failed", "enter")
        await settle(pilot, until=lambda: shown(app) == ["tiny-mix-s0"], what="one failed run")
        jobs.focus_run("cpu-stage+mix-s2")
        await settle(pilot)
        assert len(shown(app)) == 8 and jobs.selected.name == "cpu-stage+mix-s2"

        # x archives the selected run, after asking; a queued one is refused.
        await pilot.press("x")
        await settle(pilot, until=lambda: isinstance(app.screen, Confirm), what="the question")
        assert "Archive cpu-stage+mix-s2?" in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("y")
        await settle(pilot, until=lambda: (ws / "archive" / "cpu-stage+mix-s2").is_dir(), what="the archive")
        app.rescan()
        await settle(pilot, until=lambda: "cpu-stage+mix-s2" not in shown(app), what="the row to go")
        jobs.focus_run("tiny-bio-s0")  # queued
        await settle(pilot)
        await pilot.press("D")
        await settle(pilot)
        assert not isinstance(app.screen, Confirm) and (ws / "runs" / "tiny-bio-s0").is_dir()
        assert any("is queued: cancel it first (c)" in n.message for n in app._notifications)

    drive(ws, (120, 36), script)


def test_the_accuracy_table_exports_as_shown(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")

    async def script(app, pilot):
        acc = app.query_one(AccuracyPane)
        await pilot.press("2")
        await settle(pilot, until=lambda: acc.groups, what="the accuracy tables")
        await pilot.press("e")
        await settle(pilot, until=lambda: list((ws / "exports").glob("accuracy-fig1-*.csv")), what="the export")
        rows = list(csv.reader(io.StringIO(next((ws / "exports").glob("accuracy-fig1-*.csv")).read_text())))
        table = app.query_one("#acc-fig1", DataTable)
        assert rows[0] == [str(c.label) for c in table.columns.values()]
        assert rows[1:] == [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert any("±" in c for r in rows[1:] for c in r)  # seeds folded: mean ± population std, as shown

    drive(ws, (120, 36), script)


def test_compare_shows_the_cli_s_table_for_the_runs_the_filter_keeps(tmp_path):
    """m on Jobs: `factrecall-jobs compare` for the shown runs, the settings that differ as columns."""
    ws = fixed_workspace(tmp_path / "ws")
    other = _run(ws, "tiny-stage+mix-s0", ("stage", "mix"), 0, age=5, preset="tiny")  # a second configuration
    atomic_write_json(other / "metrics.json", _metrics(0))
    cpu = [ws / "runs" / f"cpu-stage+mix-s{seed}" for seed in (0, 1, 2)]

    def table(app) -> tuple[list[str], list[list[str]]]:
        t = app.screen.query_one("#compare-table", DataTable)
        return [str(c.label) for c in t.columns.values()], [
            [str(c) for c in t.get_row_at(i)] for i in range(t.row_count)
        ]

    async def script(app, pilot):
        await pilot.press("m")  # every run with results: the two configurations
        await settle(
            pilot, until=lambda: isinstance(app.screen, CompareScreen) and app.screen.rows, what="the comparison"
        )
        assert table(app) == comparison([other, *cpu])  # the CLI's own table, row for row
        header, rows = table(app)
        assert "data.people" in header and {r[0] for r in rows} == {"tiny-stage+mix-s0", "cpu-stage+mix-s*"}
        assert "differing: data.people, data.pool_size" in str(app.screen.query_one("#compare-title").render())
        await pilot.press("e")
        await settle(pilot, until=lambda: list((ws / "exports").glob("compare-*.csv")), what="the export")
        assert list(csv.reader(io.StringIO(next((ws / "exports").glob("compare-*.csv")).read_text()))) == [
            header,
            *rows,
        ]
        await pilot.press("escape")
        await settle(pilot, until=lambda: not isinstance(app.screen, CompareScreen), what="back to Jobs")

        await pilot.press("slash", *"preset:cpu", "enter", "m")  # only the filter's runs: seeds of one configuration
        await settle(
            pilot, until=lambda: isinstance(app.screen, CompareScreen) and app.screen.rows, what="the comparison"
        )
        assert table(app) == comparison(cpu)
        assert "3 runs matching 'preset:cpu'" in str(app.screen.query_one("#compare-title").render())
        assert "differing: nothing but the seed" in str(app.screen.query_one("#compare-title").render())

    drive(ws, (140, 36), script)
