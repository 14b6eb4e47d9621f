"""The app open while a job writes: a real `factrecall-jobs run` process makes its data, trains,
scores (metrics.json) and fills its store while the app scans the workspace every 0.2 s and the
Store, Accuracy and Jobs tabs read it over and over; beside it, a run whose events end in a torn line,
as a job killed mid-write leaves them. Nothing crashes; each look shows a whole state (the store's
written chunks only grow); at the end the app shows the finished run and store."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time

from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.store_view import StorePane


def test_the_app_follows_a_store_being_written_and_never_reads_half_a_state(tiny_run, tmp_path):
    ws = tmp_path / "ws"
    torn = ws / "runs" / "torn"
    shutil.copytree(tiny_run, torn)
    with (torn / "events.jsonl").open("a") as f:
        f.write('{"time": 1700000000.0, "kind": "progr')  # a torn last line
    name = "written-now"
    # Long enough (about 20 s) that the app sees it at work whatever the machine's load.
    argv = [sys.executable, "-m", "jobs.cli", "--workspace", str(ws), "run", "--preset", "tiny", "--name", name,
            "--set", "train.bio.epochs=150", "--set", "train.mix.epochs=150"]

    async def session():
        app = FactrecallApp(ws, scan_every=0.2)
        async with app.run_test(size=(120, 36)) as pilot:
            for _ in range(50):  # the app is up and has read the workspace before the job starts
                if app.query_one(JobsPane).runs:
                    break
                await pilot.pause(0.1)
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            looks, written, states = 0, [], set()
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                if looks % 3 == 0:  # the Store tab, then Accuracy (metrics.json), then Jobs (events)
                    await pilot.press(("4", "2", "1")[looks // 3 % 3])
                await pilot.pause(0.1)
                pane = app.query_one(StorePane)
                if pane.chunks_written.get("resid_mid") is not None:
                    written.append(pane.chunks_written["resid_mid"])
                seen = app.query_one(JobsPane).runs.get(name)
                states.add((seen.status, len(seen.steps_done)) if seen else None)
                looks += 1
            assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
            assert len(states - {None}) >= 2, states  # the app followed the job through its steps
            for _ in range(50):
                run_seen = app.query_one(JobsPane).runs.get(name)
                if run_seen is not None and run_seen.status == "done":
                    break
                await pilot.pause(0.2)
            assert run_seen.status == "done" and "dump" in run_seen.steps_done
            assert app.query_one(JobsPane).runs["torn"].status == "done"  # read past its torn line
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("s")  # this run's store
            for _ in range(50):
                pane = app.query_one(StorePane)
                await pilot.pause(0.3)  # its reads run in workers
                if pane.chunks_written.get("resid_mid") and "of" in pane.info_text:
                    break
            assert written == sorted(written)  # what it showed only grew
            assert "written" in pane.info_text

    asyncio.run(session())
