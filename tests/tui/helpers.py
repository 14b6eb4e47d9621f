"""The TUI tests' one way to wait: `settle(pilot)` until the app has done what it was asked, or
`settle(pilot, until=...)` until something is true. Nothing here measures speed: the only clock is
tests/helpers.py's PATIENCE_S, the point at which a test is stuck for good.

And `sites_run`: a copy of the tiny run whose store holds several capture sites, dumped anew."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from textual.pilot import Pilot
from textual.worker import Worker, WorkerCancelled

from tests.helpers import PATIENCE_S, run_cli

T = TypeVar("T")
POLL_S = 0.05


async def _finished(workers: list[Worker]) -> None:
    """Wait until every worker has ended, however: a worker cancelled on the way (an exclusive one
    replaced by a newer one, as the study form's plan is when a field changes) has ended too, and
    is no failure. A worker that failed raises, as the app itself would."""
    ended = await asyncio.gather(*(w.wait() for w in workers), return_exceptions=True)
    for outcome in ended:
        if isinstance(outcome, BaseException) and not isinstance(outcome, (WorkerCancelled, asyncio.CancelledError)):
            raise outcome


async def settle(
    pilot: Pilot,
    until: Callable[[], T | Awaitable[T]] | None = None,
    what: str = "the app to settle",
    patience: float | None = None,
) -> T | None:
    """Wait, and return what `until` last returned.

    - Without `until`: until the app is quiet, every worker finished (those started meanwhile too)
      and every message handled. Not for a screen with an endless worker (the log screen's follower):
      give `until` there.
    - With `until` (a function, or a coroutine function): until it returns something truthy, while
      the app runs. A predicate that raises (a file another process is half-way through writing) is
      asked again.

    After `patience` seconds (PATIENCE_S: 600, or $FACTRECALL_TEST_PATIENCE) the test fails, saying
    what it waited for and what it last saw."""
    limit = PATIENCE_S if patience is None else patience
    t0 = time.monotonic()
    seen: object = "nothing yet"
    quiet = 0  # rounds in a row that ended with no worker running (two: a result's handler started none)
    while True:
        if until is None:
            busy = [w for w in pilot.app.workers if not w.is_finished]
            if busy:
                seen = f"workers still running: {', '.join(sorted({w.group for w in busy}))}"
                left = limit - (time.monotonic() - t0)
                try:
                    await asyncio.wait_for(_finished(busy), timeout=max(left, 0.01))
                except TimeoutError:
                    pass
            await pilot.pause()
            quiet = quiet + 1 if all(w.is_finished for w in pilot.app.workers) else 0
            if quiet == 2:
                return None
        else:
            try:
                value = until()
                if inspect.isawaitable(value):
                    value = await value
            except Exception as err:  # noqa: BLE001 - reported if it is still so at the deadline
                value, seen = None, f"{type(err).__name__}: {err}"
            else:
                seen = value
            if value:
                return value
            await pilot.pause(POLL_S)
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"waited {limit:.0f} s for {what}; last saw: {seen!r}"[:2000])


def sites_run(tiny_run: Path, workspace: Path, name: str, sites: str, age: float = 0) -> Path:
    """WORKSPACE/runs/NAME: a copy of the tiny run (checkpoints included) whose activation store is
    dumped again, Mix's vectors alone, at `sites` (`factrecall-jobs dump NAME --models mix --sites
    SITES`: a second of work); its spec.json `age` seconds older than the run's, for the runs'
    order (newest first)."""
    run = workspace / "runs" / name
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("run.lock", "activations.zarr", "trajectory.zarr"))
    (run / "done" / "dump.json").unlink(missing_ok=True)  # else the dump resumes the store it no longer finds
    assert run_cli("--workspace", workspace, "dump", name, "--models", "mix", "--sites", sites) == 0
    spec = run / "spec.json"
    t = spec.stat().st_mtime - age
    os.utime(spec, (t, t))
    return run
