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
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            assert not {"pickle", "cPickle", "dill", "cloudpickle", "joblib"} & {n.split(".")[0] for n in names}, (
                f"{path}:{node.lineno} imports a pickler"
            )
    for call, name in _calls(tree):
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        assert name not in ("torch.load", "pickle.load", "pickle.loads", "os.system", "os.popen", "eval", "exec"), where
        for kw in call.keywords:
            if kw.arg == "trust_remote_code":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, f"{where}: trust_remote_code"
            if kw.arg == "shell":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, f"{where}: shell=True"
        if name.startswith("subprocess.") and call.args:
            assert not isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)), (
                f"{where}: a command line as a string; give an argument list"
            )


def test_the_checks_above_can_fail(tmp_path):
    """The checker is not vacuous: it catches each thing it looks for."""
    for bad in (
        "import pickle",
        "import torch\ntorch.load('x')",
        "f(trust_remote_code=True)",
        "import subprocess\nsubprocess.run('ls ' + x, shell=True)",
        "import subprocess\nsubprocess.run(f'ls {x}')",
    ):
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


@pytest.mark.parametrize(
    "name",
    [
        "../escaped",
        "a/b",
        "/abs",
        ".hidden",
        "",
        "a..b",
        "x" * 200,
        "tab\there",
        "new\nline",
        "-flag",
        "runs/../../x",
        "ok name",
    ],
)
def test_a_run_name_cannot_leave_the_workspace(name):
    with pytest.raises(SpecError, match="use letters, digits"):
        check_run_name(name)


@pytest.mark.parametrize("name", ["cpu-stage+mix-s0", "reproduce-cpu-s2", "sweep_lr=1e-3", "a.b"])
def test_ordinary_run_names_pass(name):
    assert check_run_name(name) == name


# -- one home each for reading a file, printing its text and naming a workspace folder -------------------
# Reading a file: only through store/fileio.py (regular files only, never blocking, capped). What else
# may read: the kernel's own files and the package's presets, which no one hands over.
READS_ALLOWED = ("Path('/proc", "Path(f'/proc", "Path('/sys", "resources.files(")
# `.open` calls that are not a file opened for reading: the store's API, a descriptor, a zip member
# (its size checked first, jobs.models), the report pane's own method.
OTHER_OPENS = ("store.open", "os.open", "z.open", "self.open")
# Folders of a workspace: named once, in jobs/run/workspace.py.
WORKSPACE_FOLDERS = {"runs", "reproduce", "archive", "exports", "screenshots", "models", "queue"}


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    where = str(path.relative_to(ROOT))
    out = []
    for call, name in _calls(tree):
        reads = (
            name.endswith((".read_text", ".read_bytes"))
            or name == "json.load"
            or (
                (name == "open" or name.endswith(".open") and name not in OTHER_OPENS)
                and not any(
                    isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+")
                    for a in [*call.args[1:2], *(k.value for k in call.keywords if k.arg == "mode")]
                )
            )
        )
        if reads and where != "store/fileio.py" and not name.startswith(READS_ALLOWED):
            out.append(
                f"{where}:{call.lineno}: {name}(...) reads a file past store/fileio.py (a FIFO blocks it, a "
                "device never ends): use jobs.run.files.read_bytes/read_json or store.fileio.read_regular"
            )
        if name in ("Console", "rich.console.Console") and where != "jobs/shown.py":
            out.append(
                f"{where}:{call.lineno}: a Rich Console that prints control characters raw: use jobs.shown.SafeConsole"
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and node.right.value in WORKSPACE_FOLDERS
            and where != "jobs/run/workspace.py"
        ):
            out.append(
                f"{where}:{node.lineno}: {ast.unparse(node)} names a workspace folder past jobs/run/workspace.py "
                "(which refuses a link there)"
            )
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_are_read_printed_and_placed_through_their_one_home(path):
    assert not _problems(path), "\n".join(_problems(path))


def test_the_one_home_checks_can_fail(tmp_path):
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        for bad in (
            "p.read_text()",
            "json.load(f)",
            "open(p)",
            "open(p, 'rb')",
            "p.open('rb')",
            "Console()",
            "ws / 'runs'",
            "workspace / 'reproduce' / name",
        ):
            path = tmp_path / "bad.py"
            path.write_text(bad)
            assert _problems(path), bad
        for fine in ("open(p, 'w')", "Path('/proc/cpuinfo').read_text()", "SafeConsole()", "ws / name"):
            path = tmp_path / "fine.py"
            path.write_text(fine)
            assert not _problems(path), fine
    finally:
        ROOT = saved
