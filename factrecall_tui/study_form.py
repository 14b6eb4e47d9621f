"""The New study form (`s` on the Report tab, or "Reproduce the paper" in the palette): the paper's
whole study, `factrecall-jobs reproduce`, queued through the workspace queue like a run.

As the fields change, the form asks `factrecall-jobs reproduce --dry-run` with the same options (in a
thread: a separate process, since the app imports no study or model code) and shows its plan: the
runs, their steps, memory, disk and the time it predicts; or the one line that says what is wrong.
Queue (ctrl+s) is possible only once the plan for exactly these fields is in, and asks first; the
study then runs as one queued job (`jobs.launch.queue.submit_study`), and the Report tab follows it:
its runs, then its probe sweeps, then its report."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import get_current_worker

from factrecall_tui.confirm import Confirm
from factrecall_tui.escape import escaped
from factrecall_tui.launch import parse_seeds
from factrecall_tui.pane import HandsFailuresUp
from factrecall_tui.quiet import Line
from jobs.errors import USER_ERRORS, FactrecallError, first_line
from jobs.launch.queue import start_worker, submit_study
from jobs.run.spec import DEFAULT_PRESET, check_run_name, preset_names
from jobs.shown import visible

PLAN_AFTER_S = 0.6  # a pause in typing this long asks for the plan
PLAN_TIMEOUT_S = 300


def study_argv(preset: str, seeds: str, snapshots: str, people: str, model: str, name: str) -> list[str]:
    """`factrecall-jobs reproduce`'s options for the form's fields (raising FactrecallError for a field
    the CLI would refuse before it plans: seeds, the name)."""
    chosen = parse_seeds(seeds)
    if not chosen:
        raise FactrecallError("seeds: give at least one, e.g. 0 1 2 as the paper")
    argv = ["--preset", preset, "--seeds", *map(str, chosen), "--name", check_run_name(name or preset)]
    argv += ["--snapshots", snapshots.strip()] if snapshots.strip() else []
    argv += ["--people", people.strip()] if people.strip() else []
    argv += ["--model", model.strip()] if model.strip() else []
    return argv


def _row(label: str, widget) -> ComposeResult:
    with Horizontal(classes="study-row"):
        yield Label(label, classes="study-label")
        yield widget


class StudyScreen(HandsFailuresUp, ModalScreen[str | None]):
    """Returns the name of the study it queued (None when cancelled)."""

    BINDINGS = [Binding("escape", "close", "Cancel"), Binding("ctrl+s", "queue", "Queue", priority=True)]
    HELP = (
        "New study",
        "The paper's whole study (factrecall-jobs reproduce): its runs, probes and report, "
        "queued as one job. The plan below is the dry run's, for exactly these fields; ctrl+s "
        "queues once it is in.",
    )

    @dataclass
    class Planned(Message, bubble=False):
        argv: list[str]
        text: str  # the dry run's output (the plan), or its error line
        ok: bool

    def __init__(self, workspace: Path):
        super().__init__()
        self.workspace = workspace
        self.argv: list[str] | None = None  # the fields as options, when they parse
        self.planned: list[str] | None = None  # the options whose dry run succeeded, shown below
        self.plan_text = ""
        self._timer: Timer | None = None
        self._proc: subprocess.Popen | None = None  # the dry run under way

    def _stop_plan(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def on_unmount(self) -> None:
        self._stop_plan()

    def compose(self) -> ComposeResult:
        with Vertical(id="study"):
            yield Static(
                "New study · factrecall-jobs reproduce · [dim]ctrl+s queues, escape cancels[/]", id="study-title"
            )
            with Vertical(id="study-fields"):
                yield from _row(
                    "Preset",
                    Select(
                        [(p, p) for p in preset_names()],
                        value=DEFAULT_PRESET,
                        allow_blank=False,
                        id="study-preset",
                        compact=True,
                    ),
                )
                yield from _row("Seeds", Input("0 1 2", placeholder="0 1 2, or 0-4", id="study-seeds", compact=True))
                yield from _row(
                    "Snapshots",
                    Input(
                        "4",
                        placeholder="checkpoints kept along training (0: none)",
                        id="study-snapshots",
                        type="integer",
                        compact=True,
                    ),
                )
                yield from _row(
                    "People", Input(placeholder="the preset's", id="study-people", type="integer", compact=True)
                )
                yield from _row(
                    "Model",
                    Input(placeholder="built-in, or a local HF checkpoint folder", id="study-model", compact=True),
                )
                yield from _row("Name", Input(placeholder="default: the preset's name", id="study-name", compact=True))
            with VerticalScroll(id="study-plan-scroll"):
                yield Line("", id="study-plan")
            with Horizontal(id="study-buttons"):
                yield Button("Queue", variant="primary", id="study-queue", compact=True, disabled=True)
                yield Button("Cancel", id="study-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#study-preset").focus()
        self._changed()

    def _fields(self) -> list[str]:
        value = lambda wid: str(self.query_one(wid, Input).value)  # noqa: E731
        return study_argv(
            str(self.query_one("#study-preset", Select).value),
            value("#study-seeds"),
            value("#study-snapshots"),
            value("#study-people"),
            value("#study-model"),
            value("#study-name"),
        )

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        """The fields changed: the shown plan no longer holds; a new one is asked for after a pause."""
        self.planned = None
        self.query_one("#study-queue", Button).disabled = True
        try:
            self.argv = self._fields()
        except FactrecallError as err:
            self.argv = None
            self._show(Text.assemble(("✗ ", "red"), visible(err)))
            return
        self._show(Text("planning… (factrecall-jobs reproduce --dry-run)", style="dim"))
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(PLAN_AFTER_S, lambda: self._plan(list(self.argv or [])))

    @on(Input.Submitted)
    def _next_field(self) -> None:
        self.focus_next()

    @work(thread=True, exclusive=True, group="study-plan", exit_on_error=False)
    def _plan(self, argv: list[str]) -> None:
        """The dry run, as the CLI prints it (no colour, as wide as the form)."""
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "96", "TERM": "dumb"}
        cmd = [sys.executable, "-m", "jobs.cli", "--workspace", str(self.workspace), "reproduce", *argv, "--dry-run"]
        self._stop_plan()  # the plan of fields since changed: its process stops, it would only cost CPU
        proc = self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL
        )
        try:
            out, err = proc.communicate(timeout=PLAN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            text, ok = (
                f"the dry run took over {PLAN_TIMEOUT_S} s; plan it in a shell: "
                f"factrecall-jobs reproduce {' '.join(argv)} --dry-run",
                False,
            )
        else:
            ok = proc.returncode == 0
            text = out if ok else (err.strip() or out.strip() or f"exit {proc.returncode}")
        if not get_current_worker().is_cancelled:
            self.post_message(self.Planned(argv, text, ok))

    @on(Planned)
    def _planned(self, message: Planned) -> None:
        if message.argv != self.argv:
            return  # the fields changed since: another plan is on its way
        self.plan_text = message.text
        if message.ok:
            self.planned = message.argv
            self._show(Text(visible(message.text.rstrip(), lines=True)))  # the dry run's words: text
            self.query_one("#study-queue", Button).disabled = False
        else:
            self._show(Text.assemble(("✗ ", "red"), visible(message.text.strip().splitlines()[-1])))

    def _show(self, text: Text) -> None:
        self.query_one("#study-plan", Static).update(text)

    @on(Button.Pressed, "#study-queue")
    def action_queue(self) -> None:
        if self.planned is None or self.planned != self.argv:
            self.notify("wait for the plan of these fields (below) first", severity="warning")
            self.app.bell()
            return
        argv = self.planned
        name = argv[argv.index("--name") + 1]
        seeds = argv[argv.index("--seeds") + 1 : argv.index("--name")]
        self.app.push_screen(
            Confirm(
                f"Queue the study [b]{escaped(name)}[/b]: {len(seeds)} run{'s' * (len(seeds) != 1)} "
                "(seeds " + " ".join(seeds) + "), their probes and the report, as planned below? "
                "It takes the machine's slot until it is done.",
                yes="Queue it",
            ),
            lambda yes: self._queue(name, argv) if yes else None,
        )

    def _queue(self, name: str, argv: list[str]) -> None:
        try:
            submit_study(self.workspace, name, argv, start=False)
            start_worker(self.workspace)
        except (OSError, *USER_ERRORS) as err:
            self._show(Text.assemble(("✗ ", "red"), visible(first_line(err))))
            return
        self.dismiss(name)

    @on(Button.Pressed, "#study-cancel")
    def action_close(self) -> None:
        self.dismiss(None)
