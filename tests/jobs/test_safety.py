"""Safety, checked against the source tree: no pickle, no remote code, no shell built from input,
and no run name that leaves the workspace (docs/reliability.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobs.errors import SpecError
from jobs.run.spec import check_run_name

ROOT = Path(__file__).parents[2]
SOURCES = sorted(p for pkg in ("jobs", "store", "factrecall_tui") for p in (ROOT / pkg).rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_no_remote_code_no_shell(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not {"pickle", "cPickle", "dill", "cloudpickle", "joblib"} & {n.split(".")[0] for n in names}, \
                f"{path}:{node.lineno} imports a pickler"
    for call, name in _calls(tree):
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        assert name not in ("torch.load", "pickle.load", "pickle.loads", "os.system", "os.popen", "eval", "exec"), where
        for kw in call.keywords:
            if kw.arg == "trust_remote_code":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, f"{where}: trust_remote_code"
            if kw.arg == "shell":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, f"{where}: shell=True"
        if name.startswith("subprocess.") and call.args:
            assert not isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)), \
                f"{where}: a command line as a string; give an argument list"


def test_the_checks_above_can_fail(tmp_path):
    """The checker is not vacuous: it catches each thing it looks for."""
    for bad in ("import pickle", "import torch\ntorch.load('x')", "f(trust_remote_code=True)",
                "import subprocess\nsubprocess.run('ls ' + x, shell=True)", "import subprocess\nsubprocess.run(f'ls {x}')"):
        path = tmp_path / "bad.py"
        path.write_text(bad)
        with pytest.raises(AssertionError):
            _check(path)


def _check(path: Path) -> None:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        test_no_pickle_no_remote_code_no_shell(path)
    finally:
        ROOT = saved


@pytest.mark.parametrize("name", ["../escaped", "a/b", "/abs", ".hidden", "", "a..b", "x" * 200, "tab\there",
                                  "new\nline", "-flag", "runs/../../x", "ok name"])
def test_a_run_name_cannot_leave_the_workspace(name):
    with pytest.raises(SpecError, match="use letters, digits"):
        check_run_name(name)


@pytest.mark.parametrize("name", ["cpu-stage+mix-s0", "reproduce-cpu-s2", "sweep_lr=1e-3", "a.b"])
def test_ordinary_run_names_pass(name):
    assert check_run_name(name) == name
