"""The GPU check (benchmarks/gpu/) cannot rot between the times a GPU is lent: its rehearsal runs every step
on the CPU at tiny sizes, the wheels it installs cover what the GPU machine lacks, and what it carries
fits a device call."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
CARRIED_MIB = 64  # what one device call carries: the checkout's tracked and untracked files, and .whl


def _names(path: Path) -> dict[str, str]:
    """name -> version (or '') of a list of packages, one a line, '#' comments."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def _wheel_with_a_script(folder: Path) -> None:
    """A tiny pure-Python wheel with a console script of its own, in `folder`."""
    source = folder.parent / "tiny-wheel"
    (source / "tiny_wheel").mkdir(parents=True)
    (source / "tiny_wheel" / "__init__.py").write_text("def main():\n    print('tiny')\n")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tiny-wheel"\nversion = "1.0"\n[project.scripts]\ntiny-wheel = "tiny_wheel:main"\n'
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(folder), str(source)],
        check=True,
        capture_output=True,
    )


def test_the_rehearsal_runs_every_step_of_the_check_and_writes_what_comes_back(tmp_path):
    """With --wheels, as on the GPU machine: the carried wheels (here one tiny wheel with a script of its
    own) and the project go into one private folder, each with its console scripts."""
    out, site = tmp_path / "out", tmp_path / "site"
    _wheel_with_a_script(tmp_path / "wheels")
    env = {
        **os.environ,
        "OUT": str(out),
        "FACTRECALL_SITE": str(site),
        "FACTRECALL_WHEELS": str(tmp_path / "wheels"),
        "PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("OMP_NUM_THREADS", None)  # the check's steps choose their own, as on the GPU machine
    proc = subprocess.run(
        ["bash", str(GPU / "check.sh"), "--rehearse", "--wheels"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {"factrecall-jobs", "factrecall-tui", "tiny-wheel"} <= {p.name for p in (site / "bin").iterdir()}
    assert (site / "tiny_wheel" / "__init__.py").is_file()
    # The install holds every module and data file of the sources (a package list that named only the
    # top-level packages once left out jobs.run and the rest: an editable install hides that).
    sources = {
        str(p.relative_to(ROOT))
        for package in ("jobs", "store", "factrecall_tui")
        for p in (ROOT / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    installed = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert sources - installed == set()
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.json", "check.log", "study.tar.gz", "summary.json", "summary.md", "tests.xml"]
    assert len(files) <= 8  # what a device call brings back
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["rehearsal"] and list(steps) == ["env", "tests", "study", "bench"]
    assert all(r["ok"] for r in steps.values()), steps
    assert steps["env"]["unmet"] == [] and steps["env"]["gpu"] is None
    tests = steps["tests"]
    assert tests["passed"] >= 7 and tests["failures"] == tests["errors"] == tests["skipped"] == 0
    study = steps["study"]
    assert 8 <= study["people"] <= 16 and study["fits"] and study["rate_tflops"] > 0
    assert study["plan"]["seconds"] <= study["budget_s"] and study["exit"] == 0
    phases = study["measured"]["phases"]
    assert set(phases) == {"bio", "stage", "mix"}
    assert all(p["planned_s"] > 0 and p["measured_s"] > 0 and p["peak_gb"] is None for p in phases.values())
    with tarfile.open(out / "study.tar.gz") as tar:
        names = tar.getnames()
        report = tar.extractfile("reproduce/check/report.md").read().decode()
    assert "plan.json" in names and "runs/reproduce-check-s0/metrics.json" in names
    assert any(n.endswith(".png") for n in names) and "Mix" in report
    rows = json.loads((out / "bench.json").read_text())
    assert [r["variant"] for r in rows] == ["plain", "checkpointing"]
    assert all(r["tokens_per_s"] > 0 and r["tflops"] > 0 for r in rows)
    assert rows[0]["last_loss"] == pytest.approx(rows[1]["last_loss"], rel=1e-4)  # the same step, recomputed
    md = (out / "summary.md").read_text()
    assert "| study | ok |" in md and "| bench | ok |" in md and "Tests marked gpu: " in md


def test_without_a_gpu_the_check_says_so_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(GPU / "check.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines()[-1] == (
        "torch sees no CUDA GPU here: run the check on the GPU machine, or --rehearse"
    )
    proc = subprocess.run(["bash", str(GPU / "check.sh"), "--fast"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "check.sh: unknown option '--fast': give --rehearse (and --wheels), or nothing on the GPU machine"
    )


def test_the_wheels_cover_every_requirement_the_gpu_machine_lacks():
    """Each of factrecall's requirements is in the GPU machine's image or among the wheels (wheels.sh checks
    the wheels' own requirements when it downloads them); one version of each wheel."""
    image, wheels = _names(GPU / "image.txt"), _names(GPU / "wheels.txt")
    assert len(image) > 150 and {"torch", "transformers", "numpy", "pytest"} <= set(image)
    assert all(wheels.values()) and not set(wheels) & set(image)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    required = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0]).lower() for r in project}
    assert required - set(image) - set(wheels) == set()
    assert {"zarr", "faker", "pydantic", "concept-erasure", "numcodecs"} <= set(wheels)


def test_what_the_check_carries_fits_a_device_call():
    """The checkout's tracked files, and the wheels' share (wheels.sh holds them to it), within one call's
    64 MiB; .whl as it is here, where wheels.sh has run. SmolLM2's wheel (93 MB) cannot travel."""
    share = int(re.search(r"^WHEELS_MB=(\d+)$", (GPU / "wheels.sh").read_text(), re.M).group(1))
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: what would travel is what git tracks")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tracked = sum((ROOT / os.fsdecode(p)).stat().st_size for p in listed if p and (ROOT / os.fsdecode(p)).is_file())
    assert tracked + share * 2**20 <= CARRIED_MIB * 2**20, f"the checkout takes {tracked / 2**20:.1f} MiB"
    wheels = ROOT / ".whl"
    if wheels.is_dir():
        here = sum(p.stat().st_size for p in wheels.glob("*.whl"))
        assert here <= share * 2**20 and tracked + here <= CARRIED_MIB * 2**20
