"""Shared fixtures: one tiny end-to-end run per test session (about 15 s on 2 cores), reused by every
test that only reads a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.cli import main


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished `factrecall-jobs run --preset tiny` (Stage and Mix, seed 0)."""
    workspace = tmp_path_factory.mktemp("workspace")
    assert run_cli("--workspace", workspace, "run", "--preset", "tiny") == 0
    return workspace / "runs" / "tiny-stage+mix-s0"


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())
