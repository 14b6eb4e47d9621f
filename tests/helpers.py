"""What many tests use: the CLI as a function, a run's metrics, and the one way to wait.

tests/conftest.py sets the environment the CLI reads when it is imported (COLUMNS, and the thread
count under pytest-xdist) before it imports this module, so run_cli's CLI is the one CI runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from jobs.cli import main


def run_cli(*argv: str) -> int:
    """`factrecall-jobs ARGV...` in this process; the arguments may be paths or numbers."""
    return main([str(a) for a in argv])


def metrics(run: Path) -> dict:
    """A run folder's metrics.json."""
    return json.loads((run / "metrics.json").read_text())


# How long a test waits for something that a working program does eventually (a job reaching a step,
# a process ending). Never a measure of speed: only the point at which a test is stuck for good, so it
# is generous enough for a shared machine running 10-30x slower than an idle one.
PATIENCE_S = float(os.environ.get("FACTRECALL_TEST_PATIENCE", "600"))


def wait_until(predicate, what: str, timeout: float | None = None, every: float = 0.05):
    """Poll `predicate` until it returns something truthy, and return that. A predicate that raises
    (reading a file another process is writing) is polled again; on timeout the assertion says what
    the predicate last returned or raised."""
    t0 = time.monotonic()
    limit = PATIENCE_S if timeout is None else timeout
    seen: object = "nothing yet"
    while True:
        try:
            value = predicate()
        except Exception as err:  # noqa: BLE001 - reported if it is still so at the deadline
            value, seen = None, f"{type(err).__name__}: {err}"
        else:
            seen = value
        if value:
            return value
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"waited {limit:.0f} s for {what}; last saw: {seen!r}"[:2000])
        time.sleep(every)
