"""Remembered settings: what the app keeps between sessions, in one small JSON file in factrecall's
config folder (`~/.config/factrecall/tui.json`; `$XDG_CONFIG_HOME` moves it: `jobs.run.files.user_folder`).

- `theme`: the last theme chosen (ctrl+p, "Change theme").
- `launch`: the launch form's last launched values, except the run's name (a name is used once).
- `probes`: per workspace, the runs last chosen on the Probes tab.

The file is read through `jobs.run.files` (never blocking: a FIFO, a device, a folder or a file too
large is refused in one line). A file that is not JSON, or not an object, is moved aside to
`tui.json.bad` with one notification, and the app starts from its defaults; one that cannot be read at
all (a FIFO the user made there, say) is left as it is, never moved nor written over: the app says so
and starts from its defaults, remembering nothing this session. A value of the wrong type is ignored.
An account without a home (no HOME, no XDG_CONFIG_HOME) remembers nothing, said once; so does a config
folder that is a link. A config folder that cannot be written costs the remembering only (one
notification), never the session. Writes go by rename, so a crash leaves the old file or the new one,
never half of one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.errors import FactrecallError, first_line
from jobs.run.files import atomic_write_json, read_bytes, user_folder

FILE_NAME = "tui.json"


def default_path() -> Path | None:
    """~/.config/factrecall/tui.json (the folder made if missing, never a link), or None where the
    account has no home to keep it in. Raises RunFolderError where the folder is a link or a file."""
    folder = user_folder("config")
    return None if folder is None else folder / FILE_NAME


class Remembered:
    """The file's contents, read once; each `set` writes the whole file again (it is a few hundred
    bytes). A problem reading or writing it is one line for the user, handed to the function given to
    `tell` (the app's notifications), those found before it was given included."""

    def __init__(self, path: Path | None = None):
        self._pending: list[str] = []
        self._tell: Callable[[str], None] = self._pending.append
        self._writable = True  # False: nothing is written this session (said once, when found)
        self._said_write = False  # a failed write is said once
        if path is None:
            try:
                path = default_path()
            except FactrecallError as err:  # ~/.config/factrecall a link or a file
                path = None
                self._tell(f"cannot keep remembered settings: {first_line(err)}; nothing is remembered this session")
            else:
                if path is None:
                    self._tell("no home folder (HOME and XDG_CONFIG_HOME unset): nothing is remembered this session")
        self.path = path
        self._data: dict[str, Any] = self._read() if path is not None else {}
        if path is None:
            self._writable = False

    def tell(self, say: Callable[[str], None]) -> None:
        self._tell = say
        for line in self._pending:
            say(line)
        self._pending.clear()

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            os.stat(self.path)
        except FileNotFoundError:
            return {}
        except OSError:
            pass  # said by the read below
        try:
            data = read_bytes(self.path, "starting from defaults (it is left as it is, and not written over)")
        except FactrecallError as err:
            # A FIFO, a device, a folder, a file too large, unreadable: not ours to move or replace.
            self._writable = False
            self._tell(f"cannot read remembered settings: {first_line(err)}")
            return {}
        try:
            value = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
        bad = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, bad)
        except OSError as err:
            self._tell(
                f"remembered settings {self.path} are damaged and cannot be moved aside ({err.strerror or err}); "
                "starting from defaults"
            )
        else:
            self._tell(f"remembered settings {self.path} were damaged: moved to {bad.name}; starting from defaults")
        return {}

    # -- typed reads: a value of the wrong type is as good as none --------------------------------
    def text(self, key: str) -> str | None:
        value = self._data.get(key)
        return value if isinstance(value, str) else None

    def launch(self) -> dict[str, str | list[str]]:
        values = self._data.get("launch")
        if not isinstance(values, dict):
            return {}
        return {
            k: v
            for k, v in values.items()
            if isinstance(k, str)
            and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)))
        }

    def probe_runs(self, workspace: Path) -> list[str]:
        runs = self._data.get("probes", {})
        chosen = runs.get(str(workspace.resolve())) if isinstance(runs, dict) else None
        return [n for n in chosen if isinstance(n, str)] if isinstance(chosen, list) else []

    # -- writes -----------------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        self._set("theme", theme)

    def set_launch(self, values: dict[str, str | list[str]]) -> None:
        self._set("launch", dict(values))

    def set_probe_runs(self, workspace: Path, names: list[str]) -> None:
        runs = self._data.get("probes")
        runs = dict(runs) if isinstance(runs, dict) else {}
        runs[str(workspace.resolve())] = list(names)
        self._set("probes", runs)

    def _set(self, key: str, value: Any) -> None:
        """Kept for the session; written to the file where it can be (said once where it cannot)."""
        if self._data.get(key) == value:
            return
        self._data[key] = value
        if not self._writable or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self._data)
        except (OSError, FactrecallError) as err:
            if not self._said_write:
                self._said_write = True
                self._tell(
                    f"cannot remember settings in {self.path}: {getattr(err, 'strerror', None) or err} "
                    "(the app works on without)"
                )
