"""Every file of a finished run folder and its store, damaged every way a collaborator's tarball, a
full disk or a careless edit damages it (truncated, deleted, garbage, a folder where the file should
be, a symbolic link out of the workspace, a FIFO, a device node), under every verb that reads it.
Each cell must end as one line and exit 2, or as a clean repair (exit 0 and the run as it was); never
a traceback, and never a byte changed outside the run folder (the link's target least of all)."""

from __future__ import annotations

import io
import os
import shutil
import stat
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from factrecall_tui.runs import Scanner
from jobs.cli import main
from jobs.run.events import read_events
from jobs.run.folder import read_metrics
from jobs.words import steps_of
from tests.guards import bounded

RUN = "tiny-stage+mix-s0"
OUTSIDE = b"a file of the user's, outside the workspace\n"

# file of the run folder -> the verbs that read it
READERS: dict[str, tuple[str, ...]] = {
    "spec.json": ("resume", "show", "compare", "dump", "probe", "scan"),
    "metrics.json": ("resume", "show", "compare", "scan"),
    "events.jsonl": ("resume", "status", "scan"),
    "env.json": ("resume",),
    "log.txt": ("resume",),
    "run.lock": ("resume", "status", "scan"),
    "done/data.json": ("resume", "dump"),
    "done/tokenizer.json": ("resume", "dump"),
    "done/train-mix.json": ("resume", "dump"),
    "done/eval-mix.json": ("resume",),
    "done/dump.json": ("resume", "probe", "export"),
    "data/people.jsonl": ("resume",),
    "data/bio.jsonl": ("resume",),
    "data/prompts.jsonl": ("resume", "dump"),
    "data/targets.jsonl": ("resume", "dump"),
    "tokenizer/tokenizer.json": ("resume", "dump"),
    "checkpoints/init/model.safetensors": ("resume", "dump"),
    "checkpoints/mix/final/model.safetensors": ("resume", "dump"),
    "checkpoints/mix/final/config.json": ("resume", "dump"),
    "activations.zarr/zarr.json": ("probe", "export", "scan"),
    "activations.zarr/resid_mid/zarr.json": ("probe", "export"),
    "activations.zarr/resid_mid/c/3/2/1/3/0/0": ("probe", "export"),  # mix, qa, layer 1, job
    "activations.zarr/written/c/0/0/0": ("probe", "export"),
    "activations.zarr/label/c/0/0": ("probe", "export"),
    "activations.zarr/checksum/c/0/0/0/0/0": ("probe", "export"),
}
DAMAGES = ("truncated", "deleted", "garbage", "folder", "link out", "fifo", "device")

VERBS = {
    "resume": ["resume", RUN],
    "show": ["show", RUN],
    "compare": ["compare"],
    "dump": ["dump", RUN, "--models", "mix", "--out", "OUT/x.zarr"],
    "probe": ["probe", RUN, "--attribute", "job", "--out", "OUT/p.png", "--csv", "OUT/p.csv"],
    "export": ["export", RUN, "--hdf5", "OUT/x.h5"],
    "status": ["status"],
}
CELLS = [(rel, damage, verb) for rel, verbs in READERS.items() for damage in DAMAGES for verb in verbs]


def damage(path: Path, how: str, outside: Path) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: max(len(path.read_bytes()) // 2, 1) - 1])
    elif how == "deleted":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"\x93\x00garbage\xff" * 16)
    elif how == "folder":
        path.unlink()
        path.mkdir()
        (path / "something").write_text("x")
    elif how == "link out":
        path.unlink()
        path.symlink_to(outside)
    elif how == "fifo":  # reading it would block for ever
        path.unlink()
        os.mkfifo(path)
    elif how == "device":  # what /dev/zero is: reading it never ends (`tar -x` as root restores such nodes)
        path.unlink()
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            pytest.skip("making a device node needs root (CAP_MKNOD)")


def _tree(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if not any(p == s or s in p.parents for s in skip)
    }


@pytest.fixture(scope="module")
def reference(tiny_run) -> dict:
    return read_metrics(tiny_run)


@pytest.mark.parametrize(("rel", "how", "verb"), CELLS, ids=[f"{v}:{r}:{d}" for r, d, v in CELLS])
def test_a_damaged_file_is_one_line_or_a_clean_repair(rel, how, verb, tiny_run, reference, tmp_path):
    home = tmp_path / "home"
    ws, outside = home / "ws", tmp_path / "outside.txt"
    shutil.copytree(tiny_run, ws / "runs" / RUN, ignore=shutil.ignore_patterns("probe-*.png"))
    outside.write_bytes(OUTSIDE)
    run = ws / "runs" / RUN
    damage(run / rel, how, outside)
    (ws / "OUT").mkdir()
    before = _tree(tmp_path, skip=(run, ws / "OUT"))

    if verb == "scan":  # the app: every run is listed, a damaged one as a message
        with bounded(f"the app's scan of a {how} {rel}"):
            seen = {r.name: r for r in Scanner(ws).scan()}
        assert RUN in seen or (rel, how) == ("spec.json", "deleted"), seen  # without its spec, not a run
        if RUN in seen and seen[RUN].status == "broken":
            assert seen[RUN].error and "\n" not in seen[RUN].error
    else:
        argv = [str(ws / a) if a.startswith("OUT/") else a for a in VERBS[verb]]
        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        try:
            os.chdir(ws)
            with redirect_stdout(out), redirect_stderr(err), bounded(f"{verb} on a {how} {rel}"):
                code = main(["--workspace", str(ws), *argv])
        finally:
            os.chdir(cwd)
        said = err.getvalue().strip()
        assert "Traceback" not in said
        assert code in (0, 2), said
        if code == 2:
            assert len(said.splitlines()) == 1, said
        elif verb == "resume":  # a clean repair: the whole run, with its results as they were
            assert (run / "done").is_dir()
            done = {p.stem for p in (run / "done").glob("*.json")}
            assert set(steps_of(("stage", "mix"))) <= done, done
            repaired = read_metrics(run)
            for model in ("untrained", "bio", "stage", "mix"):
                for s in ("bio", "qa_in", "qa_out"):
                    assert repaired[model][s] == reference[model][s], (model, s)
            assert not any(e.get("status") == "failed" for e in read_events(run) if e["kind"] == "run")
    assert outside.read_bytes() == OUTSIDE  # the link's target: never written
    assert _tree(tmp_path, skip=(run, ws / "OUT")) == before  # nothing outside the run folder changed


def test_the_matrix_covers_every_file_and_verb():
    assert len(READERS) >= 25 and len(CELLS) >= 380
    assert {v for verbs in READERS.values() for v in verbs} == {*VERBS, "scan"}
