"""The damaged-file matrix beyond run folders: every file factrecall keeps in a workspace's queue, a
study folder, a model's manifest, the per-user GEMM record and the app's settings, damaged every way
(truncated, deleted, garbage, a folder where the file should be, a link out of the workspace, a FIFO,
a device node), under every verb that reads it. Each cell ends in exit 0 or one line and exit 2 (or,
for the app's readers, a listing or a message); never a traceback, never a hang, and never a byte
changed outside the workspace. (Run folders and stores: tests/jobs/test_damaged_files.py.)"""

from __future__ import annotations

import io
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from jobs.cli import main
from tests.guards import bounded
from tests.jobs.test_damaged_files import DAMAGES, OUTSIDE, damage

RUN = "tiny-stage+mix-s0"
PLAN = {"name": "tiny", "preset": "tiny", "seeds": [0], "snapshots": 0, "runs": [f"runs/{RUN}"], "argv": []}
MANIFEST = {
    "source": {"file": "m.gguf", "bytes": 10, "sha256": "0" * 64, "quantization": "Q8_0"},
    "parameters": 1000,
    "config": {"num_hidden_layers": 2},
    "check": {"gap": 50.0, "passed": True},
}


def _json(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


# file (relative to the workspace; ~cache/ and ~config/ are the user's folders) -> its healthy content
FILES: dict[str, bytes] = {
    "queue/1-" + RUN + ".json": _json({"run": RUN, "device": None, "dump": True, "reuse": True, "time": 1.0}),
    "queue/started/2-" + RUN + ".json": _json({"run": RUN, "pid": 2**22 + 7, "started": 1.0, "slot": 0}),
    "queue/worker.lock": b"4194311",
    "queue/cancel/" + RUN + ".json": _json({"run": RUN, "time": 1.0}),
    "queue/slurm/" + RUN + ".json": _json(
        {"run": RUN, "job_id": "4194311", "cluster": "local", "folder": "x", "log": "x/log.out", "submitted": 1.0}
    ),
    "reproduce/tiny/progress.json": _json({"step": "probes", "runs_done": 1, "runs_total": 1}),
    "reproduce/tiny/plan.json": _json(PLAN),
    "reproduce/tiny/timing.json": _json({"run x": 1.5}),
    "reproduce/tiny/report.json": _json({"claims": [{"id": "1", "verdict": "reproduced"}]}),
    "reproduce/tiny/report.md": b"# The study\n\nIts report.\n",
    "reproduce/tiny/study.lock": b"",
    "models/m/factrecall-import.json": _json(MANIFEST),
    "~cache/factrecall/gemm.json": _json({"version": 1, "rates": {}}),
    "~config/factrecall/tui.json": _json({"theme": "textual-dark"}),
}
# file -> the verbs that read it
READERS: dict[str, tuple[str, ...]] = {
    "queue/1-" + RUN + ".json": ("status", "cancel", "app"),
    "queue/started/2-" + RUN + ".json": ("status", "cancel", "app"),
    "queue/worker.lock": ("status", "cancel"),
    "queue/cancel/" + RUN + ".json": ("status", "cancel"),
    "queue/slurm/" + RUN + ".json": ("status", "cancel", "app"),
    "reproduce/tiny/progress.json": ("status", "app"),
    "reproduce/tiny/plan.json": ("app",),
    "reproduce/tiny/timing.json": ("app",),
    "reproduce/tiny/report.json": ("app",),
    "reproduce/tiny/report.md": ("app",),
    "reproduce/tiny/study.lock": ("app", "lock"),
    "models/m/factrecall-import.json": ("models", "model"),
    "~cache/factrecall/gemm.json": ("plan",),
    "~config/factrecall/tui.json": ("settings",),
}
VERBS = {
    "status": ["status"],
    "cancel": ["cancel", RUN],
    "models": ["models", "list"],
    "model": ["reproduce", "--preset", "tiny", "--seeds", "0", "--model", "m", "--dry-run"],
    "plan": ["reproduce", "--preset", "tiny", "--seeds", "0", "--snapshots", "0", "--dry-run"],
}
CELLS = [(rel, how, verb) for rel, verbs in READERS.items() for how in DAMAGES for verb in verbs]


def _where(rel: str, ws: Path) -> Path:
    if rel.startswith("~cache/"):
        return Path(os.environ["XDG_CACHE_HOME"]) / rel.removeprefix("~cache/")
    if rel.startswith("~config/"):
        return Path(os.environ["XDG_CONFIG_HOME"]) / rel.removeprefix("~config/")
    return ws / rel


@pytest.mark.parametrize(("rel", "how", "verb"), CELLS, ids=[f"{v}:{r}:{d}" for r, d, v in CELLS])
def test_a_damaged_handed_over_file_is_one_line_or_goes_on(rel, how, verb, tiny_run, tmp_path, monkeypatch):
    ws, outside = tmp_path / "ws", tmp_path / "outside.txt"
    shutil.copytree(tiny_run, ws / "runs" / RUN, ignore=shutil.ignore_patterns("*.zarr", "checkpoints", "probe-*.png"))
    outside.write_bytes(OUTSIDE)
    for name, content in FILES.items():
        if name.startswith("queue/") and not rel.startswith("queue/") and verb != "status":
            continue  # the queue's files only where the queue is what is damaged (or `status` reads it all)
        path = _where(name, ws)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if verb == "model":
        (ws / "models" / "m" / "config.json").write_text("{}")
    target = _where(rel, ws)
    damage(target, how, outside)
    monkeypatch.chdir(ws)

    if verb == "app":  # the app's readers: the Jobs tab's scan and the Report tab's study list
        from factrecall_tui.report_view import find_studies
        from factrecall_tui.runs import Scanner

        with bounded(f"the app on a {how} {rel}"):
            runs = {r.name: r for r in Scanner(ws).scan()}
            studies = find_studies(ws)
        assert RUN in runs
        for study in studies:
            assert "\n" not in study.damaged
    elif verb == "lock":  # what `reproduce` takes first (jobs.study.reproduce.study_lock)
        from jobs.errors import RunFolderError
        from jobs.run.files import take_lock

        with bounded(f"taking a {how} {rel}"):
            try:
                os.close(take_lock(target, "study tiny"))
            except RunFolderError as err:
                assert "\n" not in str(err) and how in ("folder", "link out", "fifo", "device"), err
            else:
                assert how in ("truncated", "deleted", "garbage"), how
    elif verb == "settings":  # the app's remembered settings, read at its start
        from factrecall_tui.remembered import Remembered

        said: list[str] = []
        with bounded(f"the app's settings on a {how} {rel}"):
            settings = Remembered()
            settings.tell(said.append)
            settings.set_theme("nord")  # and written back: never through the link, never over a FIFO or device
        assert all("\n" not in line for line in said), said
        if how in ("fifo", "device"):
            assert target.exists() and not target.is_file()  # a special file the user made is never replaced
    else:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err), bounded(f"{verb} on a {how} {rel}"):
            code = main(["--workspace", str(ws), *VERBS[verb]])
        text = (out.getvalue() + err.getvalue()).strip()
        assert "Traceback" not in text
        assert code in (0, 2), text
        if code == 2:
            assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
    assert outside.read_bytes() == OUTSIDE  # the link's target: never written


def test_the_matrix_covers_the_queue_the_study_the_manifest_the_caches_and_the_settings():
    kinds = {rel.split("/")[0] for rel in READERS}
    assert kinds == {"queue", "reproduce", "models", "~cache", "~config"}
    assert {"fifo", "device"} <= set(DAMAGES) and len(CELLS) >= 150
