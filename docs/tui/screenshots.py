"""Redraw the README's screenshots of factrecall-tui from a real workspace, as SVG files beside this
script (Textual's own screenshots: what the terminal showed, cell for cell).

    python docs/tui/screenshots.py WORKSPACE RUN [RUN ...]

RUN are the runs to show in the Accuracy and Probes screens (several seeds of one configuration);
the first one's store is the Store screen's; the Report screen shows the workspace's first study
(`factrecall-jobs reproduce`), if it has one, and its figures. Also drawn: Compare (the runs the Jobs
table shows), the Accuracy curves over training, and the help of the Jobs screen. The probes come from the
stores' caches when they were fitted before (`factrecall-jobs probe RUN ...`), else they are fitted now.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from factrecall_tui.accuracy import AccuracyPane
from factrecall_tui.app import FactrecallApp
from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.probes import ProbesPane
from factrecall_tui.remembered import Remembered

HERE = Path(__file__).resolve().parent
SIZE = (120, 36)


async def settle(pilot, condition=lambda: True, timeout: float = 120) -> None:
    for _ in range(int(timeout * 10)):
        # Every worker ended, a cancelled one too (wait_for_complete raises at the first cancelled).
        await asyncio.gather(*(w.wait() for w in pilot.app.workers), return_exceptions=True)
        await pilot.pause(0.1)
        if condition():
            return


async def main(workspace: Path, runs: list[str]) -> None:
    # Remembered settings from a folder of its own: the pictures never depend on this machine's.
    app = FactrecallApp(workspace, scan_every=0, remembered=Remembered(Path(tempfile.mkdtemp()) / "tui.json"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.query_one(JobsPane).runs)
        app.query_one(JobsPane).focus_run(runs[0])
        await settle(pilot)
        app.save_screenshot("jobs.svg", str(HERE))
        await pilot.press("n")
        await settle(pilot)
        app.save_screenshot("launch.svg", str(HERE))
        await pilot.press("escape")
        await pilot.press("m")  # Compare: the runs the Jobs table shows
        await settle(pilot, lambda: getattr(app.screen, "rows", None))
        app.save_screenshot("compare.svg", str(HERE))
        await pilot.press("escape")
        app.open_run("accuracy", runs[0])
        await settle(pilot, lambda: app.query_one(AccuracyPane).groups)
        app.save_screenshot("accuracy.svg", str(HERE))
        await pilot.press("t")  # the same configuration over training
        await settle(pilot)
        app.save_screenshot("curves.svg", str(HERE))
        await pilot.press("t")
        probes = app.query_one(ProbesPane)
        app.open_run("probes", runs[0])
        await settle(pilot)
        for name in runs[1:]:
            probes.query_one("#probe-runs").select(name)
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot, lambda: probes.results is not None and probes.idle.is_set())
        app.save_screenshot("probes.svg", str(HERE))
        app.open_run("store", runs[0])
        await settle(
            pilot, lambda: app.query_one("#store-tree").root.children and app.query_one("#store-preview").row_count
        )
        app.save_screenshot("store.svg", str(HERE))
        if (workspace / "reproduce").is_dir():  # a study's report (`factrecall-jobs reproduce`), and its figures
            app.action_tab("report")
            await settle(pilot, lambda: app.query_one("#report-doc").source)
            app.save_screenshot("report.svg", str(HERE))
            await pilot.press("g")
            await settle(pilot, lambda: getattr(app.screen, "shown", None))
            app.save_screenshot("figures.svg", str(HERE))
            await pilot.press("escape")
        app.action_tab("jobs")
        await pilot.press("question_mark")  # the keys of the screen in front
        await settle(pilot)
        app.save_screenshot("help.svg", str(HERE))
    print(f"wrote {', '.join(p.name for p in sorted(HERE.glob('*.svg')))} in {HERE}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2:]))
