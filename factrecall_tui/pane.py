"""What the app asks of its panes, defined once:

- `ShowsRuns` and `OpensRuns`: the contract the app relies on (`show(runs)` after every workspace
  scan; `focus_run(name)` to put a run in front), as Protocols;
- `@when_mounted`: such a call made before the pane is mounted (its widgets cannot be queried yet)
  waits until it is;
- `HandsFailuresUp`: a pane's worker that fails unexpectedly reaches the app's one
  `Worker.StateChanged` handler, which shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from textual.widget import Widget
from textual.worker import Worker, WorkerState

from factrecall_tui.runs import RunSummary

P = ParamSpec("P")
W = TypeVar("W", bound=Widget)


class ShowsRuns(Protocol):
    def show(self, runs: list[RunSummary]) -> None:
        """Every run of the workspace, newest first: called after the first scan and after every scan
        that found a run changed (an unchanged run is the very same object from scan to scan); after
        every scan for the panes that watch other files too (Store, Report: factrecall_tui/app.py)."""


class OpensRuns(ShowsRuns, Protocol):
    def focus_run(self, name: str) -> None:
        """Put run `name` in front (or say why it cannot be)."""


def when_mounted(method: Callable[Concatenate[W, P], None]) -> Callable[Concatenate[W, P], None]:
    """For a pane method the app may call at any time: a call made before the pane is mounted runs
    once it is, after its on_mount (Textual runs it from the pane's message queue), the calls in the
    order they came."""

    @wraps(method)
    def call(self: W, *args: P.args, **kwargs: P.kwargs) -> None:
        if self.is_mounted:
            method(self, *args, **kwargs)
        else:
            self.call_later(method, self, *args, **kwargs)

    return call


class HandsFailuresUp:
    """Mixed into a widget or screen that runs workers. Textual posts `Worker.StateChanged` to the
    worker's own widget and does not bubble it; this hands a failure on to the app, whose one handler
    shows it (a widget may still look at its own workers' states to tidy up)."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            event.worker.node.app.post_message(Worker.StateChanged(event.worker, event.state))
