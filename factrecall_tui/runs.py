"""What the TUI knows about a workspace, read from run folders' files only (spec.json,
metrics.json, events.jsonl): no model code is imported into the UI process."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jobs.runfolder import read_metrics


@dataclass
class RunSummary:
    name: str
    path: Path
    spec: dict
    metrics: dict
    status: str  # done | running | interrupted | failed | new
    last_event: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        d = self.spec.get("data", {})
        model = self.spec.get("model", {})
        which = model.get("path") or f"built-in {model.get('layers')}x{model.get('hidden')}"
        return (f"{self.name} — preset {self.spec.get('preset')}, {'+'.join(self.spec.get('strategies', []))}, "
                f"seed {self.spec.get('seed')}, {d.get('people')} people ({d.get('qa_in_fraction', 0):.0%} QA-in), {which}")


def _last_event(path: Path) -> dict:
    events = path / "events.jsonl"
    if not events.exists():
        return {}
    with events.open("rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:  # a line cut by the seek or still being written
            continue
    return {}


def _status(path: Path, last: dict) -> str:
    if last.get("kind") == "run" and last.get("status") in ("done", "failed", "interrupted"):
        return last["status"]
    return "running" if last else "new"


def scan(workspace: Path) -> list[RunSummary]:
    """Every run folder under `workspace/runs`, newest first."""
    out = []
    for path in sorted((workspace / "runs").glob("*/spec.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        folder = path.parent
        try:
            spec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        last = _last_event(folder)
        out.append(RunSummary(folder.name, folder, spec, read_metrics(folder), _status(folder, last), last))
    return out
