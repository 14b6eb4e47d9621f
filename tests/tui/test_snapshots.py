"""Snapshot tests: each screen of the app, drawn in the fixed workspace of tests/tui/workspace.py.

A change that alters what a screen shows fails here; look at the report pytest writes, and if the new
picture is right, accept it with `pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import os

import pytest
from textual.widgets import Input, Tree

from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import JobsPane
from tests.tui.helpers import settle
from tests.tui.workspace import fixed_workspace, hold

SIZE = (110, 32)


@pytest.fixture
def app(tmp_path, monkeypatch):
    """The app on the fixed workspace, opened by a relative path (so the header reads `ws` on any
    machine), with one run held as a live job would hold it."""
    fixed_workspace(tmp_path / "ws")
    monkeypatch.chdir(tmp_path)
    fd = hold(tmp_path / "ws" / "runs" / "tiny-stage+mix-s1")
    yield FactrecallApp(tmp_path.joinpath("ws").relative_to(tmp_path), scan_every=0)
    os.close(fd)


async def ready(pilot, until=None, what: str = "") -> None:
    """The first scan in, `until` true, and then everything they started done; the inputs' cursors
    still (a blinking cursor would make the picture depend on the moment it is taken)."""
    await settle(pilot, until=lambda: pilot.app.query_one(JobsPane).runs, what="the first scan")
    if until is not None:
        await settle(pilot, until=until, what=what)
    await settle(pilot)
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False


def test_jobs(app, snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        app.query_one(JobsPane).focus_run("tiny-mix-s0")
        await ready(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_launch_form(app, snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("n")
        await ready(pilot)
        await pilot.press("tab", "tab")  # preset (focused), strategies, seeds
        app.screen.query_one("#seeds", Input).value = ""
        await pilot.press(*"0-2")
        await ready(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_accuracy(app, snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        await pilot.press("2")
        await ready(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_probes(app, snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        app.open_run("probes", "cpu-stage+mix-s0")
        await ready(pilot)
        await pilot.press("f")
        await ready(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_store(app, snap_compare):
    async def run_before(pilot):
        await ready(pilot)
        app.open_run("store", "cpu-stage+mix-s0")
        await ready(pilot, lambda: len(list(app.query(Tree))) > 0, "the store's tree")
        await ready(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
