"""A run's live log: its log.txt (every event with a time) and job.out (the job's console: step lines,
errors, the final tables), followed as they grow by a thread worker, as `tail -f` would."""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, Static
from textual.worker import get_current_worker

FILES = {"log.txt": "log.txt · events", "job.out": "job.out · the job's console"}
POLL_S = 0.25
MAX_LINES = 5000
START_BYTES = 512 * 1024  # a long log opens at its last half megabyte


class LogScreen(Screen):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("end", "follow", "Follow")]

    def __init__(self, run_path: Path):
        super().__init__()
        self.run_path = run_path

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"[b]{self.run_path.name}[/]  [dim]{self.run_path}[/]", id="log-title")
        with Vertical(id="logs"):
            for name, title in FILES.items():
                log = Log(id=name.replace(".", "-"), max_lines=MAX_LINES, highlight=True)
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
        logs = {name: self.query_one(f"#{name.replace('.', '-')}", Log) for name in FILES}
        offsets = {}
        for name in FILES:
            try:
                offsets[name] = max(0, (self.run_path / name).stat().st_size - START_BYTES)
            except OSError:
                offsets[name] = 0
        rest = dict.fromkeys(FILES, "")
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
                    try:
                        self.app.call_from_thread(logs[name].write_lines, lines)
                    except RuntimeError:  # the app is closing
                        return
            time.sleep(POLL_S)
