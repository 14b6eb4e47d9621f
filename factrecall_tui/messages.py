"""The app's messages: what its workspace scan hands to the UI, and what a pane asks of the app
(children ask for navigation with a message; the app decides). Each is a small dataclass, as in
Posting's `messages.py`. A pane's own worker results are nested in the pane that posts them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textual.message import Message

from factrecall_tui.runs import RunSummary

RunTab = Literal["jobs", "accuracy", "probes", "store"]  # the tabs that can put a run in front


@dataclass
class RunsScanned(Message):
    """A workspace scan's result: every run, newest first."""

    runs: list[RunSummary]


@dataclass
class ScanFailed(Message):
    """The workspace could not be read (tried again at the next scan): why, in one line."""

    error: str


@dataclass
class Rescan(Message):
    """Scan the workspace now: a pane changed what is queued."""


@dataclass
class OpenRun(Message):
    """Switch to `tab` with run `name` in front."""

    tab: RunTab
    name: str


@dataclass
class OpenLog(Message):
    """Follow the log of the run in folder `run_path`."""

    run_path: Path


@dataclass
class Export(Message):
    """Save a table as CSV (WORKSPACE/exports/WHAT-TIME.csv) and copy it to the clipboard."""

    what: str
    csv: str


@dataclass
class Compare(Message):
    """Open the Compare screen for the runs in `paths` (`what` says which, e.g. "3 of 9 runs: mix")."""

    paths: list[Path]
    what: str


@dataclass
class OpenFigures(Message):
    """Show a study's report figures: (name, PNG path) each."""

    study: str
    figures: list[tuple[str, Path]]
