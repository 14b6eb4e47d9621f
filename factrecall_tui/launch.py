"""The launch form: a new job's settings, validated as they are typed (the same `plan_runs` the CLI's
`run` and `submit` go through), then queued to the workspace's background worker."""

from __future__ import annotations

import glob
import re
import shutil
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, SelectionList, Static

from factrecall_tui.checklist import Checklist
from factrecall_tui.confirm import Confirm
from factrecall_tui.escape import escaped
from factrecall_tui.quiet import Line
from factrecall_tui.remembered import Remembered
from jobs.errors import FactrecallError
from jobs.launch.plan import RunRequest, plan_runs
from jobs.launch.queue import prepare, start_worker, submit
from jobs.run.checkpoints import resolve_model
from jobs.run.folder import load_spec
from jobs.run.spec import DEFAULT_PRESET, load_preset, preset_names
from jobs.run.workspace import RUNS
from jobs.run.workspace import folder as workspace_folder
from jobs.words import DEFAULT_STRATEGIES

DEVICES = ("auto", "cpu", "cuda")
# The CLI keeps the order strategies are given in (it is part of a run's identity and name); the form
# gives them in this order, the one `--strategy` is usually typed in (and the default, stage mix).
ORDER = ("bio", "stage", "mix", "qa")
EXECUTORS = {"local": "local queue: one job at a time on a CPU, one per GPU"}
CONFIRM_RUNS = 8  # more runs than this at once: asked first
REMEMBERED_INPUTS = ("seeds", "people", "model", "settings")  # the text fields remembered (not the name)
MAX_RUNS = 200  # more than this from one form is a typo (0-999), not a plan


def parse_seeds(text: str) -> list[int]:
    """`0`, `0 1 2`, `0,1,2` or `0-4` (a range, both ends included)."""
    seeds: list[int] = []
    for part in re.split(r"[\s,]+", text.strip()):
        if not part:
            continue
        if m := re.fullmatch(r"(\d+)-(\d+)", part):
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise FactrecallError(f"seeds {part!r}: give a range like 0-4")
            if hi - lo >= MAX_RUNS:
                raise FactrecallError(
                    f"seeds {part!r}: at most {MAX_RUNS} seeds from the form at once (a shell loop "
                    "over `factrecall-jobs submit` takes more)"
                )
            seeds += range(lo, hi + 1)
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise FactrecallError(f"seeds {part!r}: give numbers like 0 1 2, or a range 0-4")
    return seeds  # RunRequest says what is wrong with them (none, or a repeat)


def check_device(device: str) -> None:
    """What can be told without torch: the name's form, and whether any NVIDIA GPU is visible."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise FactrecallError(f"device {device!r}: use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not (glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi")):
        raise FactrecallError(f"device {device}: no NVIDIA GPU is visible on this machine; choose auto or cpu")


def _row(label: str, widget) -> ComposeResult:
    with Horizontal(classes="row"):
        yield Label(label, classes="field-label")
        yield widget


class LaunchScreen(ModalScreen[list[str]]):
    """Returns the names of the runs it queued (an empty list when cancelled)."""

    BINDINGS = [Binding("escape", "close", "Cancel"), Binding("ctrl+s", "launch", "Launch", priority=True)]
    HELP = (
        "New job",
        "Runs to queue: checked as you type by the same code as the CLI (the line above the "
        "buttons). Enter moves to the next field; ctrl+s queues.",
    )

    def __init__(self, workspace: Path, remembered: Remembered | None = None):
        super().__init__()
        self.workspace = workspace
        self.planned: list = []
        self.remembered = remembered
        # The form starts from the values last launched with (not the name: a name is used once), each
        # kept only where it is still a valid choice.
        last = remembered.launch() if remembered is not None else {}
        text = lambda key, default, valid=None: (  # noqa: E731
            last[key] if isinstance(last.get(key), str) and (valid is None or last[key] in valid) else default
        )
        strategies = (
            [s for s in last.get("strategies", []) if s in ORDER] if isinstance(last.get("strategies"), list) else []
        )
        self.start = {
            "preset": text("preset", DEFAULT_PRESET, preset_names()),
            "strategies": strategies or list(DEFAULT_STRATEGIES),
            "device": text("device", "auto", DEVICES),
            "executor": text("executor", "local", EXECUTORS),
            **{key: text(key, "0" if key == "seeds" else "") for key in REMEMBERED_INPUTS},
        }

    def values(self) -> dict[str, str | list[str]]:
        """What the form would launch with, as remembered (all but the name)."""
        return {
            "preset": str(self.query_one("#preset", Select).value),
            "strategies": [s for s in ORDER if s in self.query_one("#strategies", SelectionList).selected],
            "device": str(self.query_one("#device", Select).value),
            "executor": str(self.query_one("#executor", Select).value),
            **{key: self.query_one(f"#{key}", Input).value for key in REMEMBERED_INPUTS},
        }

    def compose(self) -> ComposeResult:
        with Vertical(id="launch"):
            yield Static("New job · [dim]ctrl+s launches, escape cancels[/]", id="launch-title")
            with VerticalScroll(id="launch-fields"):
                yield from _row(
                    "Preset",
                    Select(
                        [(p, p) for p in preset_names()],
                        value=self.start["preset"],
                        allow_blank=False,
                        id="preset",
                        compact=True,
                    ),
                )
                yield from _row(
                    "Strategies",
                    Checklist[str](
                        *((s, s, s in self.start["strategies"]) for s in ORDER), id="strategies", compact=True
                    ),
                )
                yield from _row(
                    "Seeds", Input(self.start["seeds"], placeholder="0 1 2, or 0-4", id="seeds", compact=True)
                )
                yield from _row(
                    "People",
                    Input(self.start["people"], placeholder="the preset's", id="people", type="integer", compact=True),
                )
                yield from _row(
                    "Model",
                    Input(
                        self.start["model"],
                        placeholder="built-in, an HF checkpoint folder, or an imported model",
                        id="model",
                        compact=True,
                    ),
                )
                yield from _row(
                    "Device",
                    Select(
                        [(d, d) for d in DEVICES],
                        value=self.start["device"],
                        allow_blank=False,
                        id="device",
                        compact=True,
                    ),
                )
                yield from _row(
                    "Executor",
                    Select(
                        [(v, k) for k, v in EXECUTORS.items()],
                        value=self.start["executor"],
                        allow_blank=False,
                        id="executor",
                        compact=True,
                    ),
                )
                yield from _row(
                    "Settings",
                    Input(
                        self.start["settings"],
                        placeholder="KEY=VALUE ..., e.g. train.mix.epochs=30",
                        id="settings",
                        compact=True,
                    ),
                )
                yield from _row("Name", Input(placeholder="default: preset-strategies-seed", id="name", compact=True))
            yield Line("", id="plan")
            with Horizontal(id="launch-buttons"):
                yield Button("Launch", variant="primary", id="launch-button", compact=True)
                yield Button("Cancel", id="cancel-button", compact=True)

    def on_mount(self) -> None:
        self.query_one("#preset").focus()
        self._check()

    # -- validation ------------------------------------------------------------------------------
    def _plan(self) -> list:
        strategies = list(self.query_one("#strategies", SelectionList).selected)
        if not strategies:
            raise FactrecallError("choose at least one strategy")
        people = self.query_one("#people", Input).value.strip()
        model = self.query_one("#model", Input).value.strip() or None
        if model is not None:
            model = resolve_model(model, self.workspace)  # a path, or the name of an imported model
        device = str(self.query_one("#device", Select).value)
        check_device(device)
        overrides = self.query_one("#settings", Input).value.split()
        bad = next((o for o in overrides if "=" not in o), None)
        if bad:
            raise FactrecallError(f"setting {bad!r}: write KEY=VALUE, e.g. train.mix.epochs=30")
        ordered = [s for s in ORDER if s in strategies]
        if self.query_one("#executor", Select).value not in EXECUTORS:
            raise FactrecallError(
                f"executor {self.query_one('#executor', Select).value}: choose one of {', '.join(EXECUTORS)}"
            )
        return plan_runs(
            RunRequest(
                preset=str(self.query_one("#preset", Select).value),
                strategies=tuple(ordered),
                seeds=tuple(parse_seeds(self.query_one("#seeds", Input).value)),
                overrides=tuple(overrides),
                people=int(people) if people else None,
                model=model,
                device=device,
                name=self.query_one("#name", Input).value.strip() or None,
            ),
            self.workspace,
        )

    def _check(self) -> bool:
        plan = self.query_one("#plan", Static)
        preset = load_preset(str(self.query_one("#preset", Select).value))
        self.query_one("#people", Input).placeholder = f"the preset's {preset['data']['people']}"
        try:
            self.planned = self._plan()
            runs = workspace_folder(self.workspace, RUNS)  # never through a link (jobs.run.workspace)
        except (FactrecallError, ValueError) as err:
            self.planned = []
            plan.update(f"[red]✗[/] {escaped(err)}")  # it quotes what was typed, a model's files: text
            plan.set_class(True, "-error")
            return False
        names = [name for _, name in self.planned]
        existing = [n for n in names if (runs / n / "spec.json").exists()]
        for spec, name in self.planned:  # what `run` would refuse on launch is refused here, in the form's words
            if name in existing:
                try:
                    other = load_spec(runs / name)
                except FactrecallError:
                    other = None
                if other is None or other.identity() != spec.identity():
                    self.planned = []
                    plan.update(
                        f"[red]✗[/] run {escaped(name)} exists and holds "
                        f"{'a different experiment' if other else 'a folder that cannot be read'}: change Name "
                        "(or leave it empty for a name of its own)"
                    )
                    plan.set_class(True, "-error")
                    return False
        one = len(existing) == 1
        note = (
            f" ({len(existing)} of them exist{'s' if one else ''} and resume{'s' if one else ''})" if existing else ""
        )
        shown = ", ".join(names[:3]) + (f" … and {len(names) - 3} more" if len(names) > 3 else "")
        plan.update(f"[green]✓[/] queues {len(names)} run{'s' if len(names) > 1 else ''}{note}: {escaped(shown)}")
        plan.set_class(False, "-error")
        return True

    @on(Input.Changed)
    @on(Select.Changed)
    @on(SelectionList.SelectedChanged)
    def _changed(self) -> None:
        self._check()

    # -- actions ---------------------------------------------------------------------------------
    @on(Input.Submitted)
    def _next_field(self) -> None:
        """Enter moves on to the next field; only ctrl+s or the Launch button launch."""
        self.focus_next()

    @on(Button.Pressed, "#launch-button")
    def action_launch(self) -> None:
        if not self._check():
            self.app.bell()
            return
        if len(self.planned) > CONFIRM_RUNS:
            self.app.push_screen(
                Confirm(
                    f"Queue {len(self.planned)} runs? They run one at a time on a CPU (one per "
                    "GPU) and take the machine for as long.",
                    yes=f"Queue {len(self.planned)}",
                ),
                lambda yes: self._launch() if yes else None,
            )
            return
        self._launch()

    def _launch(self) -> None:
        device = str(self.query_one("#device", Select).value)
        queued = []
        try:
            for spec, name in self.planned:
                prepare(self.workspace, spec, name)
            for _, name in self.planned:
                submit(self.workspace, name, device=None if device == "auto" else device, start=False)
                queued.append(name)
        except (FactrecallError, OSError) as err:
            if queued:
                start_worker(self.workspace)
                self.notify(f"queued {', '.join(queued)} before: {err}", severity="warning")
            self.query_one("#plan", Static).update(f"[red]✗[/] {escaped(err)}")
            self.query_one("#plan", Static).set_class(True, "-error")
            return
        start_worker(self.workspace)
        if self.remembered is not None:
            self.remembered.set_launch(self.values())
        self.dismiss([name for _, name in self.planned])

    @on(Button.Pressed, "#cancel-button")
    def action_close(self) -> None:
        self.dismiss([])
