"""Remembered settings: what the app keeps between sessions, in one small JSON file in the platform's
config folder (`~/.config/factrecall/tui.json` on Linux; `$XDG_CONFIG_HOME` moves it).

- `theme`: the last theme chosen (ctrl+p, "Change theme").
- `launch`: the launch form's last launched values, except the run's name (a name is used once).
- `probes`: per workspace, the runs last chosen on the Probes tab.

A file that is not JSON, or not an object, is moved aside to `tui.json.bad` with one notification, and
the app starts from its defaults; a value of the wrong type is ignored. A config folder that cannot be
written costs the remembering only (one notification), never the session. Writes go by rename, so a
crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs

from jobs.errors import FactrecallError
from jobs.run.files import atomic_write_json

FILE_NAME = "tui.json"


def default_path() -> Path:
    return platformdirs.user_config_path("factrecall") / FILE_NAME


class Remembered:
    """The file's contents, read once; each `set` writes the whole file again (it is a few hundred
    bytes). A problem reading or writing it is one line for the user, handed to the function given to
    `tell` (the app's notifications), those found before it was given included."""

    def __init__(self, path: Path | None = None):
        self.path = default_path() if path is None else path
        self._pending: list[str] = []
        self._tell: Callable[[str], None] = self._pending.append
        self._data: dict[str, Any] = self._read()

    def tell(self, say: Callable[[str], None]) -> None:
        self._tell = say
        for line in self._pending:
            say(line)
        self._pending.clear()

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as err:
            self._tell(f"cannot read remembered settings {self.path}: {err.strerror or err}; starting from defaults")
            return {}
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict):
            return data
        bad = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, bad)
        except OSError as err:
            self._tell(f"remembered settings {self.path} are damaged and cannot be moved aside ({err.strerror or err}); starting from defaults")
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
        return {k: v for k, v in values.items() if isinstance(k, str) and (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)))}

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
        if self._data.get(key) == value:
            return
        self._data[key] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self._data)
        except (OSError, FactrecallError) as err:
            self._tell(f"cannot remember settings in {self.path}: {getattr(err, 'strerror', None) or err} (the app works on without)")
