"""The TUI tests' one wait, `settle`, held to what it promises: a worker cancelled while it waits
(an exclusive worker replaced by a newer one, as the study form's dry-run plan is at each keystroke)
has ended, and is no failure; a worker that fails still fails the test."""

from __future__ import annotations

import asyncio

import pytest
from textual import work
from textual.app import App
from textual.widgets import Static
from textual.worker import WorkerFailed

from tests.tui.helpers import settle


class Planner(App):
    """Plans in an exclusive worker, as the study form does: each new plan cancels the last."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.plans: list[str] = []

    def compose(self):
        yield Static("plans")

    @work(exclusive=True, group="plan")
    async def plan(self, what: str) -> None:
        await self.gate.wait()
        self.plans.append(what)

    @work(group="broken")
    async def broken(self) -> None:
        raise ValueError("the plan could not be made")


def test_settle_waits_past_a_worker_cancelled_by_a_newer_one():
    async def session():
        app = Planner()
        async with app.run_test() as pilot:
            app.plan("first")
            await pilot.pause()
            waiting = asyncio.ensure_future(settle(pilot, patience=60))
            await asyncio.sleep(0.05)  # settle is now waiting on the first plan
            app.plan("second")  # which cancels it
            await asyncio.sleep(0.05)
            app.gate.set()
            await waiting
            return app.plans, [w.state.name for w in app.workers]

    plans, states = asyncio.run(session())
    assert plans == ["second"] and states in ([], ["SUCCESS"], ["CANCELLED", "SUCCESS"])


def test_settle_still_fails_when_a_worker_fails():
    async def session():
        app = Planner()
        async with app.run_test() as pilot:
            app.broken()
            await settle(pilot, patience=60)

    with pytest.raises((WorkerFailed, ValueError)):
        asyncio.run(session())
