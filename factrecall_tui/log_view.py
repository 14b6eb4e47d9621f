"""A run's live log: its log.txt (every event with a time) and job.out (the job's console: step lines,
errors, the final tables), followed as they grow by a thread worker, as `tail -f` would: it posts
each batch of whole lines as a message (as Toolong's log reader does)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, Static
from textual.worker import get_current_worker

from factrecall_tui.pane import HandsFailuresUp

FILES = {"log.txt": "log.txt · events", "job.out": "job.out · the job's console"}
POLL_S = 0.25
MAX_LINES = 5000
START_BYTES = 512 * 1024  # a long log opens at its last half megabyte


def _log_id(name: str) -> str:
    return name.replace(".", "-")


class LogScreen(HandsFailuresUp, Screen):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("end", "follow", "Follow")]

    @dataclass
    class LinesRead(Message, bubble=False):
        """Whole lines that file `name` (a key of FILES) grew by."""

        name: str
        lines: list[str]

    def __init__(self, run_path: Path):
        super().__init__()
        self.run_path = run_path

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"[b]{self.run_path.name}[/]  [dim]{self.run_path}[/]", id="log-title")
        with Vertical(id="logs"):
            for name, title in FILES.items():
                log = Log(id=_log_id(name), max_lines=MAX_LINES, highlight=True)
                log.border_title = title
                yield log
        yield Footer()

    def on_mount(self) -> None:
        self.follow()

    def action_follow(self) -> None:
        for log in self.query(Log):
            log.scroll_end(animate=False)

    @work(thread=True, exclusive=True, group="log", exit_on_error=False)
    def follow(self) -> None:
        worker = get_current_worker()
        offsets = {}
        for name in FILES:
            try:
                offsets[name] = max(0, (self.run_path / name).stat().st_size - START_BYTES)
            except OSError:
                offsets[name] = 0
        rest = dict.fromkeys(FILES, "")
        if not (self.run_path / "job.out").exists():
            self.post_message(self.LinesRead("job.out", [
                "(no job.out: the run's jobs so far were started from a shell, `factrecall-jobs run` or "
                "`reproduce`, whose console is that shell; jobs the queue or Slurm start write here)"]))
        while not worker.is_cancelled:
            for name in FILES:
                path = self.run_path / name
                try:
                    with path.open("rb") as f:
                        f.seek(offsets[name])
                        data = f.read()
                except OSError:  # not there yet (a queued job), or unreadable: tried again next time
                    continue
                if not data:
                    continue
                offsets[name] += len(data)
                text = rest[name] + data.decode(errors="replace")
                lines = text.split("\n")
                rest[name] = lines.pop()  # a line still being written waits for its end
                if lines and not worker.is_cancelled:
                    self.post_message(self.LinesRead(name, lines))
            time.sleep(POLL_S)

    @on(LinesRead)
    def _write(self, message: LinesRead) -> None:
        self.query_one(f"#{_log_id(message.name)}", Log).write_lines(message.lines)
