"""A real `factrecall-jobs dump` process, killed with SIGKILL mid-dump, resumes without recomputing
finished blocks, and ends with the very store an uninterrupted dump writes."""

import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr

import store
from tests.helpers import run_cli, wait_until

SMALL_BLOCKS = ("--chunk-people", "1", "--batch-size", "2")  # 192 blocks: a kill lands mid-dump


def _flags(out):
    try:
        return np.asarray(zarr.open_array(out / "written", mode="r")[...])
    except (FileNotFoundError, ValueError, zarr.errors.NodeNotFoundError):
        return None


def _chunk_files(out, flags):
    """Every chunk file of every flagged block, with its inode and modification time."""
    files = {}
    layers, attributes = store.open(out).layers, 6
    for m, f, b in zip(*np.nonzero(flags)):
        for layer in range(layers):
            for a in range(attributes):
                path = out / "resid_mid" / "c" / str(m) / str(f) / str(layer) / str(a) / str(b) / "0"
                files[path] = (path.stat().st_ino, path.stat().st_mtime_ns)
    return files


def test_a_dump_killed_with_sigkill_resumes_without_recomputing_finished_blocks(tiny_run, tmp_path):
    workspace = tmp_path
    run = workspace / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("activations.zarr", "dump.json", "run.lock"))
    out = workspace / "killed.zarr"
    argv = [
        sys.executable,
        "-m",
        "jobs.cli",
        "--workspace",
        str(workspace),
        "dump",
        run.name,
        *SMALL_BLOCKS,
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(
        lambda: proc.poll() is not None or ((flags := _flags(out)) is not None and flags.sum() >= 10),
        "ten blocks written",
        every=0.01,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    at_kill = _flags(out)
    assert 10 <= at_kill.sum() < at_kill.size, "the kill came too late to land mid-dump"

    # What the killed dump left is readable where it is complete, and refused where it is not.
    s = store.open(out)
    done_model = [m for i, m in enumerate(s.models) if at_kill[i].all()]
    partial = next(i for i in range(len(s.models)) if not at_kill[i].all())
    with pytest.raises(store.StoreError, match="is not completely dumped yet"):
        for fmt in s.formats:
            s.acts(fmt, 0, "job", model=s.models[partial])
    before = _chunk_files(out, at_kill)
    early = {m: s.acts("qa", 1, "job", model=m) for m in done_model}

    # Resume: the same command, run to the end.
    assert run_cli("--workspace", workspace, "dump", run.name, *SMALL_BLOCKS, "--out", out) == 0
    s = store.open(out)
    assert s.complete()
    after = _chunk_files(out, at_kill)
    assert after == before  # not one finished chunk rewritten: same inode, same mtime
    assert not list(out.rglob("*.partial"))  # the killed write's temporary file is gone
    for m, h in early.items():
        np.testing.assert_array_equal(s.acts("qa", 1, "job", model=m), h)

    # ... and the result is exactly what an uninterrupted dump writes.
    whole = workspace / "whole.zarr"
    assert run_cli("--workspace", workspace, "dump", run.name, *SMALL_BLOCKS, "--out", whole) == 0
    np.testing.assert_array_equal(zarr.open_array(out / "resid_mid")[...], zarr.open_array(whole / "resid_mid")[...])
