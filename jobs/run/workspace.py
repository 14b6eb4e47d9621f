"""A workspace's folders, named once, and the one way to reach them.

    WORKSPACE/runs/NAME/          a run folder (jobs.run.folder)
    WORKSPACE/reproduce/NAME/     a study: plan.json, progress.json, timing.json, report.md, figures (jobs.study)
    WORKSPACE/archive/NAME/       archived runs (jobs.launch.queue.archive)
    WORKSPACE/exports/            tables the app saves as CSV
    WORKSPACE/screenshots/        the app's screenshots (its command palette)
    WORKSPACE/models/NAME/        imported models (jobs.models)
    WORKSPACE/queue/              the local queue and the Slurm records (jobs.launch)

The workspace itself is the user's choice and may be a symbolic link (to a larger disk, say). Below
it, every folder factrecall writes into or reuses from is reached through `folder`, which refuses a
link (or a file) anywhere on the way: a folder handed over with a link in it cannot send a write
outside the workspace, nor have another place's files taken for the workspace's own.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from jobs.errors import RunFolderError
from jobs.run.files import safe_folder
from store.fileio import kind_of

RUNS = "runs"
REPRODUCE = "reproduce"
ARCHIVE = "archive"
EXPORTS = "exports"
SCREENSHOTS = "screenshots"
MODELS = "models"
QUEUE = "queue"


def folder(workspace: Path, *parts: str, make: bool = False) -> Path:
    """WORKSPACE/parts...: no part a symbolic link or a file (a RunFolderError names it), made if
    missing when `make`. Reading with make=False makes nothing and answers the path all the same."""
    try:
        mode = os.stat(workspace).st_mode
    except OSError:
        mode = None  # missing (made below when `make`), or said by the first look below
    if mode is not None and not stat.S_ISDIR(mode):
        raise RunFolderError(
            f"the workspace {workspace} is {kind_of(mode) or 'a file'}, not a folder; choose a writable --workspace"
        )
    return safe_folder(workspace, *parts, make=make)


def run_path(workspace: Path, name: str, make: bool = False) -> Path:
    """The run folder WORKSPACE/runs/NAME (its runs/ made with `make`; the run folder itself is made and
    checked when it is opened, jobs.run.folder.RunFolder)."""
    return folder(workspace, RUNS, make=make) / name


def study_path(workspace: Path, name: str, make: bool = False) -> Path:
    """The study folder WORKSPACE/reproduce/NAME."""
    return folder(workspace, REPRODUCE, name, make=make)
