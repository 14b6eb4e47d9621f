"""The workspace queue's folders and the entries in them (`jobs.launch.queue` writes and reads them,
`jobs.launch.worker` runs them): where the queue lies in the workspace, which files there count as
an entry, and the key each entry is named after (a run's name, or `study:NAME` for a whole study).
"""

from __future__ import annotations

import stat
from pathlib import Path

from jobs.errors import FactrecallError
from jobs.run.files import read_record
from jobs.run.spec import check_run_name
from jobs.run.workspace import QUEUE, study_path
from jobs.run.workspace import folder as workspace_folder


def queue_dir(workspace: Path, make: bool = False) -> Path:
    return workspace_folder(workspace, QUEUE, make=make)


def _valid_key(key: str) -> bool:
    """A run's name, or `study:NAME`: what factrecall names a queue entry after."""
    try:
        check_run_name(key.removeprefix(STUDY))
    except FactrecallError:
        return False
    return True


def _entries(folder: Path, stamped: bool = True) -> list[Path]:
    """The entries in a queue folder, oldest first: regular files named `<ns>-<key>.json` (`stamped`)
    or `<key>.json`, `key` a name factrecall could have written. Anything else there (a crafted name, a
    link, a FIFO) is not an entry: it never reaches a command line, a table or a terminal."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    found = []
    for entry in folder.glob("*.json"):
        stamp, _, key = entry.stem.partition("-") if stamped else ("0", "", entry.stem)
        if stamp.isdigit() and _valid_key(key) and stat.S_ISREG(entry.lstat().st_mode):
            found.append(entry)
    return sorted(found)


def _run_of(entry: Path) -> str:
    return entry.stem.split("-", 1)[1]


STUDY = "study:"  # a queued study's key, beside the runs' names (a run name has no colon)


def study_key(name: str) -> str:
    return STUDY + name


def study_folder(workspace: Path, name: str, make: bool = False) -> Path:
    return study_path(workspace, name, make=make)


_read = read_record
