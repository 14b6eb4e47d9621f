"""Shared fixtures: one tiny end-to-end run per test session (about 15 s on 2 cores), reused by every
test that only reads a finished run. The helpers tests call themselves are in tests/helpers.py."""

from __future__ import annotations

import os
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

from tests.helpers import run_cli  # noqa: E402 - after the thread count and the width are set


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
