"""Shared fixtures: one tiny end-to-end run per test session (about 15 s on 2 cores), reused by every
test that only reads a finished run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Run in parallel (pytest -n 2): one torch thread a worker, and in every job a test starts (the
    # variable is inherited). Two workers of two threads each on two cores fight over them and both
    # run several times slower. Before anything imports torch.
    os.environ["OMP_NUM_THREADS"] = "1"
# pytest-xdist gives its workers COLUMNS=80 (the README's command runs with -n auto), and the CLI's
# console takes its width from COLUMNS when it is imported; a test run alone would print 200 wide and
# pass where CI wraps lines. Every run of the suite sees the width CI sees.
os.environ["COLUMNS"] = "80"

from jobs.cli import main  # noqa: E402 - after the thread count is set


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(autouse=True)
def _own_config_folder(tmp_path_factory, monkeypatch):
    """Each test has its own empty config folder: the app's remembered settings
    (factrecall_tui/remembered.py) never come from the machine's, nor from another test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))  # the dry run's GEMM record


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished `factrecall-jobs run --preset tiny` (Stage and Mix, seed 0)."""
    workspace = tmp_path_factory.mktemp("workspace")
    assert run_cli("--workspace", workspace, "run", "--preset", "tiny") == 0
    return workspace / "runs" / "tiny-stage+mix-s0"


def metrics(run: Path) -> dict:
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
