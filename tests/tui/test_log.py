"""The log screen as a researcher reads a run's log: the training loss of each phase drawn above it
(from events.jsonl's progress events, a resumed phase drawn from its checkpoint on), and `/` to search
it, n and N to walk the matches."""

from __future__ import annotations

import json

from textual.widgets import Input, Log, Sparkline

from factrecall_tui.jobs_pane import JobsPane
from factrecall_tui.log_view import LogScreen
from tests.tui.helpers import settle
from tests.tui.test_review import drive
from tests.tui.workspace import fixed_workspace

RUN = "cpu-stage+mix-s0"


def test_the_log_shows_each_phase_s_loss_and_searches(tmp_path):
    ws = fixed_workspace(tmp_path / "ws")
    run = ws / "runs" / RUN
    bio = [(100, 3.2), (200, 1.5), (300, 0.4)]
    mix = [(50, 2.0), (100, 1.0), (60, 1.8), (120, 0.9), (180, 0.3)]  # killed at 100, resumed from step 50
    events = [{"kind": "progress", "step": "train-bio", "done": d, "total": 300, "loss": loss} for d, loss in bio]
    events += [{"kind": "progress", "step": "dump", "done": 5, "total": 10}]  # no loss: not drawn
    events += [{"kind": "progress", "step": "train-mix", "done": d, "total": 180, "loss": loss} for d, loss in mix]
    with (run / "events.jsonl").open("a") as f:
        f.write("".join(json.dumps({"time": 1.0, **e}) + "\n" for e in events))
    lines = [f"2026-12-02 07:00:{i:02d} INFO {'eval' if i % 7 == 0 else 'step'} line {i}" for i in range(60)]
    (run / "log.txt").write_text("\n".join(lines) + "\n")

    async def script(app, pilot):
        app.query_one(JobsPane).focus_run(RUN)
        await pilot.press("l")
        await settle(pilot, until=lambda: isinstance(app.screen, LogScreen), what="the log")
        screen = app.screen
        await settle(pilot, until=lambda: len(screen.losses.get("train-mix", [])) == 4, what="the losses")
        assert screen.losses == {"train-bio": bio, "train-mix": [(50, 2.0), (60, 1.8), (120, 0.9), (180, 0.3)]}
        # (the log screen's follower never ends: every wait here names what it waits for)
        await settle(pilot, until=lambda: len(screen.query(".loss-row")) == 2, what="the loss lines")
        rows = {row.id: row for row in screen.query(".loss-row")}
        assert list(rows) == ["loss-train-bio", "loss-train-mix"]
        assert rows["loss-train-bio"].query_one(Sparkline).data == [3.2, 1.5, 0.4]
        assert "3.200 → 0.400  (lowest 0.400, step 300)" in str(rows["loss-train-bio"].query_one("Label").render())

        log = screen.query_one("#log-txt", Log)
        await settle(pilot, until=lambda: log.line_count >= 60, what="log.txt")
        await pilot.press("slash", *"EVAL", "enter")  # case does not matter
        await settle(
            pilot,
            until=lambda: screen.matches or (screen.query_text, app.focused, screen.query_one("#log-search").value),
            what="the matches",
        )
        want = [i for i, line in enumerate(log.lines) if "eval" in line]
        assert screen.matches == want and len(want) == 9, (
            screen.query_text,
            app.focused,
            screen._log_searched,
            len(screen._log_searched.lines) if screen._log_searched else None,
        )
        assert str(screen.query_one("#log-matches").render()).startswith(f"match 1 of 9 · line {want[0] + 1}")
        await pilot.press("n", "n")
        assert screen.match == 2 and not log.auto_scroll  # reading back: it stopped following
        await pilot.press("N")
        assert screen.match == 1
        await pilot.press("escape")  # out of the search, still on the log
        assert isinstance(app.screen, LogScreen) and not screen.query_one("#log-search-row").display
        await pilot.press("slash", *"nothing like it", "enter")
        await settle(pilot, until=lambda: "no match" in str(screen.query_one("#log-matches").render()), what="no match")
        assert "no match for 'nothing like it'" in str(screen.query_one("#log-matches").render())
        assert isinstance(screen.query_one("#log-search", Input), Input)
        await pilot.press("escape", "escape")
        await settle(pilot, until=lambda: not isinstance(app.screen, LogScreen), what="back to Jobs")

    drive(ws, (120, 40), script)
