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

from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.store_view import StorePane
from tests.tui.helpers import settle


def test_the_app_follows_a_store_being_written_and_never_reads_half_a_state(tiny_run, tmp_path):
    ws = tmp_path / "ws"
    torn = ws / "runs" / "torn"
    shutil.copytree(tiny_run, torn)
    with (torn / "events.jsonl").open("a") as f:
        f.write('{"time": 1700000000.0, "kind": "progr')  # a torn last line
    name = "written-now"
    # Long enough (about 20 s) that the app sees it at work whatever the machine's load.
    argv = [
        sys.executable,
        "-m",
        "jobs.cli",
        "--workspace",
        str(ws),
        "run",
        "--preset",
        "tiny",
        "--name",
        name,
        "--set",
        "train.bio.epochs=150",
        "--set",
        "train.mix.epochs=150",
    ]

    async def session():
        app = FactrecallApp(ws, scan_every=0.2)
        async with app.run_test(size=(120, 36)) as pilot:
            # The app is up and has read the workspace before the job starts.
            await settle(pilot, until=lambda: app.query_one(JobsPane).runs, what="the first scan")
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            looks, written, states = 0, [], set()

            async def look() -> bool:
                """One look at the app while the job runs; true once the job has ended."""
                nonlocal looks
                if looks % 3 == 0:  # the Store tab, then Accuracy (metrics.json), then Jobs (events)
                    await pilot.press(("4", "2", "1")[looks // 3 % 3])
                pane = app.query_one(StorePane)
                if pane.chunks_written.get("resid_mid") is not None:
                    written.append(pane.chunks_written["resid_mid"])
                seen = app.query_one(JobsPane).runs.get(name)
                states.add((seen.status, len(seen.steps_done)) if seen else None)
                looks += 1
                return proc.poll() is not None

            try:
                await settle(pilot, until=look, what="the job to end while the app looks")
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert proc.wait() == 0, proc.stderr.read().decode()
            assert len(states - {None}) >= 2, states  # the app followed the job through its steps
            run_seen = await settle(
                pilot,
                until=lambda: (r := app.query_one(JobsPane).runs.get(name)) is not None and r.status == "done" and r,
                what="the app to show the run done",
            )
            assert "dump" in run_seen.steps_done
            assert app.query_one(JobsPane).runs["torn"].status == "done"  # read past its torn line
            app.query_one(JobsPane).focus_run(name)
            await pilot.press("s")  # this run's store
            pane = app.query_one(StorePane)
            await settle(
                pilot,
                until=lambda: pane.chunks_written.get("resid_mid") and "of" in pane.info_text,
                what="the run's store, with its chunks written",
            )  # its reads run in workers
            assert written == sorted(written)  # what it showed only grew
            assert "written" in pane.info_text

    asyncio.run(session())
