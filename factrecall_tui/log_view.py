"""A run's live log: its log.txt (every event with a time) and job.out (the job's console: step lines,
errors, the final tables), followed as they grow by a thread worker, as `tail -f` would: it posts
each batch of whole lines as a message (as Toolong's log reader does). Above them, the training loss
of each phase as a sparkline, from the progress events in events.jsonl (first → latest, and the
lowest). `/` searches the log in front (the one with the focus, else log.txt); n and N go to the next
and the previous match."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Input, Label, Log, Sparkline, Static
from textual.worker import get_current_worker

from factrecall_tui.escape import escaped
from factrecall_tui.pane import HandsFailuresUp
from factrecall_tui.quiet import Footer, Line
from jobs.shown import visible
from store.fileio import Unreadable, open_regular

FILES = {"log.txt": "log.txt · events", "job.out": "job.out · the job's console"}
POLL_S = 0.25
MAX_LINES = 5000
START_BYTES = 512 * 1024  # a long log opens at its last half megabyte


def _log_id(name: str) -> str:
    return name.replace(".", "-")


class LogScreen(HandsFailuresUp, Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
        Binding("end", "follow", "Follow"),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match(1)", "Next match", show=False),
        Binding("N", "next_match(-1)", "Previous match", show=False),
    ]
    # The log takes the keys at first: the search field (before it in the page) is hidden until `/`, and a
    # hidden field that had the focus would swallow every key typed.
    AUTO_FOCUS = "#log-txt"
    HELP = (
        "Log",
        "A run's log.txt and its job's console output, followed as they grow; scrolling up "
        "stops following, End jumps to the end and follows again. The training loss of each "
        "phase is drawn above them. / searches, n and N go to the next and previous match.",
    )

    @dataclass
    class LinesRead(Message, bubble=False):
        """Whole lines that file `name` (a key of FILES) grew by."""

        name: str
        lines: list[str]

    @dataclass
    class LossRead(Message, bubble=False):
        """Training losses from new progress events: (step, optimizer step, loss) each."""

        points: list[tuple[str, int, float]]

    def __init__(self, run_path: Path):
        super().__init__()
        self.run_path = run_path
        self.losses: dict[str, list[tuple[int, float]]] = {}  # training step (train-mix) -> (step, loss)
        self.query_text = ""
        self.matches: list[int] = []  # line numbers of the searched log that match
        self.match = -1  # the one shown
        self._log_searched: Log | None = None
        self._loss_rows: dict[str, tuple[Label, Sparkline]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"[b]{escaped(self.run_path.name)}[/]  [dim]{escaped(self.run_path)}[/]", id="log-title")
        yield Vertical(id="log-loss")
        with Horizontal(id="log-search-row"):
            yield Input(
                placeholder="search the log (Enter: first match; n, N: next, previous)", id="log-search", compact=True
            )
            yield Line("", id="log-matches")
        with Vertical(id="logs"):
            for name, title in FILES.items():
                log = Log(id=_log_id(name), max_lines=MAX_LINES, highlight=True)
                log.border_title = title
                yield log
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#log-search-row").display = False
        self.query_one("#log-loss").display = False
        self.follow()

    def action_follow(self) -> None:
        for log in self.query(Log):
            log.auto_scroll = True
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
        said: set[str] = set()  # the files found unreadable (a FIFO, a device), said once each
        events_at, events_rest = 0, ""  # events.jsonl is read whole: its progress events carry the loss
        if not (self.run_path / "job.out").exists():
            self.post_message(
                self.LinesRead(
                    "job.out",
                    [
                        "(no job.out: the run's jobs so far were started from a shell, `factrecall-jobs run` or "
                        "`reproduce`, whose console is that shell; jobs the queue or Slurm start write here)"
                    ],
                )
            )
        while not worker.is_cancelled:
            for name in FILES:
                path = self.run_path / name
                try:
                    with open_regular(path) as f:  # never a FIFO or a device: reading one would never end
                        f.seek(offsets[name])
                        data = f.read()
                except Unreadable as err:  # not there yet (a queued job), or not a file: tried again next time
                    if not err.missing and name not in said and not worker.is_cancelled:
                        said.add(name)
                        self.post_message(self.LinesRead(name, [f"(cannot read {path}: it {err.why})"]))
                    continue
                except OSError:  # unreadable: tried again next time
                    continue
                if not data:
                    continue
                offsets[name] += len(data)
                text = rest[name] + data.decode(errors="replace")
                lines = text.split("\n")
                rest[name] = lines.pop()  # a line still being written waits for its end
                if lines and not worker.is_cancelled:
                    self.post_message(self.LinesRead(name, lines))
            try:
                with open_regular(self.run_path / "events.jsonl") as f:
                    f.seek(events_at)
                    data = f.read()
            except (OSError, Unreadable):
                data = b""
            if data:
                events_at += len(data)
                lines = (events_rest + data.decode(errors="replace")).split("\n")
                events_rest = lines.pop()
                if (points := _losses(lines)) and not worker.is_cancelled:
                    self.post_message(self.LossRead(points))
            time.sleep(POLL_S)

    @on(LinesRead)
    def _write(self, message: LinesRead) -> None:
        self.query_one(f"#{_log_id(message.name)}", Log).write_lines(message.lines)

    # -- the loss ----------------------------------------------------------------------------------
    @on(LossRead)
    def _loss(self, message: LossRead) -> None:
        """One sparkline per training step, in the order they trained, with first → latest and the lowest."""
        box = self.query_one("#log-loss", Vertical)
        for step, at, loss in message.points:
            points = self.losses.setdefault(step, [])
            if points and at <= points[-1][0]:  # a resumed phase reports from its checkpoint again
                points[:] = [p for p in points if p[0] < at]
            points.append((at, loss))
        for step, points in self.losses.items():
            values = [loss for _, loss in points]
            # The step's name is events.jsonl's: text, never markup; part of an id only where it can be.
            label = (
                f"{visible(step):<12} {values[0]:.3f} → {values[-1]:.3f}  (lowest {min(values):.3f}, step "
                f"{points[-1][0]:,})"
            )
            if step not in self._loss_rows:
                self._loss_rows[step] = (Label("", classes="loss-label"), Sparkline([], classes="loss-line"))
                named = re.fullmatch(r"[A-Za-z0-9_-]+", step) is not None  # train-mix: its row is #loss-train-mix
                box.mount(Horizontal(*self._loss_rows[step], id=f"loss-{step}" if named else None, classes="loss-row"))
            text, line = self._loss_rows[step]
            text.update(Content(label))
            line.data = values
        box.display = bool(self.losses)

    # -- search ------------------------------------------------------------------------------------
    def _searched(self) -> Log:
        """The log in front: the one with the focus, else log.txt's."""
        focused = self.focused
        return focused if isinstance(focused, Log) else self.query_one(f"#{_log_id('log.txt')}", Log)

    def action_search(self) -> None:
        self._log_searched = self._searched()  # the log in front when `/` was pressed: the one searched
        self.query_one("#log-search-row").display = True
        self.query_one("#log-search", Input).focus()

    @on(Input.Submitted, "#log-search")
    def _search(self, event: Input.Submitted) -> None:
        self.query_text = event.value.strip()
        log = self._log_searched or self._searched()
        needle = self.query_text.lower()
        self.matches = [i for i, line in enumerate(log.lines) if needle and needle in line.lower()]
        self.match = -1
        log.focus()
        self.action_next_match(1)

    def action_next_match(self, direction: int) -> None:
        line = self.query_one("#log-matches", Static)
        if not self.matches:
            line.update(f"[red]no match for {escaped(repr(self.query_text))}[/]" if self.query_text else "")
            return
        self.match = (self.match + direction) % len(self.matches)
        at = self.matches[self.match]
        log = self._log_searched or self._searched()
        log.auto_scroll = False  # looking back: no longer following
        log.scroll_to(y=max(at - 2, 0), animate=False)
        line.update(f"match {self.match + 1} of {len(self.matches)} · line {at + 1:,} · n, N")

    def action_back(self) -> None:
        """Escape: out of the search first, then back to where the log was opened from."""
        if self.query_one("#log-search-row").display:
            self.query_one("#log-search-row").display = False
            self.query_text, self.matches = "", []
            self.query_one("#log-matches", Static).update("")
            self._searched().focus()
            return
        self.app.pop_screen()


def _losses(lines: list[str]) -> list[tuple[str, int, float]]:
    """(step, optimizer step, loss) of every progress event with a loss among events.jsonl's `lines`."""
    out = []
    for text in lines:
        if '"loss"' not in text:
            continue
        try:
            event = json.loads(text)
            loss, at = event["loss"], event["done"]
        except (ValueError, KeyError, TypeError):
            continue
        if event.get("kind") == "progress" and isinstance(loss, (int, float)) and isinstance(at, int):
            out.append((str(event.get("step", "train")), at, float(loss)))
    return out
