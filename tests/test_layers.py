"""The house's layering, checked by import-linter's contracts in pyproject.toml (store headless, jobs
never importing the app, the app running no model, jobs' sub-packages layered, no import loops), and
proof that those contracts fail when a forbidden import or a loop is added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jobs", "store", "factrecall_tui")


def lint(where: Path) -> subprocess.CompletedProcess:
    command = Path(sys.executable).with_name("lint-imports")
    if not command.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [str(command), "--config", str(where / "pyproject.toml"), "--no-cache"],
        cwd=where,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"},
    )


def test_the_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("file", "line", "broken"),
    [
        ("store/names.py", "import jobs.words", "store is headless"),
        ("jobs/run/checkpoints.py", "from jobs.run import pipeline", "no import loops"),  # pipeline -> checkpoints
        ("jobs/run/folder.py", "from jobs.launch import procs", "jobs is layered"),  # run below launch
        ("factrecall_tui/runs.py", "from jobs.run import train", "the app runs no model"),
        ("jobs/launch/procs.py", "def later():\n    from factrecall_tui import app", "jobs never imports the app"),
    ],
)
def test_a_forbidden_import_or_a_loop_breaks_a_contract(tmp_path, file, line, broken):
    """Even hidden in a function body, as the loops this replaced were."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / file).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout[-3000:]
    assert broken in result.stdout.split("Broken contracts", 1)[-1], result.stdout[-3000:]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    command = Path(sys.executable).with_name("ruff")
    if not command.exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return subprocess.run([str(command), *args, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_with_the_rules_pyproject_toml_chooses():
    result = _ruff("check")
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_code_is_as_ruff_format_writes_it():
    result = _ruff("format", "--check")
    assert result.returncode == 0, result.stdout[-3000:]
