"""The Probes pane's list of runs: those of the workspace with an activation store, ticked to be
probed (several = seeds). A rescan keeps the choice (a run that lost its store leaves it); until the
researcher chooses, the runs chosen here last time in this workspace (factrecall_tui/remembered.py)
are ticked, else the newest run with a store. A run that cannot be chosen is said why, by `choose`.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import SelectionList
from textual.widgets.selection_list import Selection

from factrecall_tui.checklist import Checklist
from factrecall_tui.remembered import Remembered
from factrecall_tui.runs import RunSummary


class RunChoice(Checklist[str]):
    """The runs offered for probing, by name (`offer`), and those chosen (`chosen`)."""

    def __init__(self, *, remembered: Remembered | None = None, workspace: Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._remembered = remembered
        self._workspace = workspace
        self.runs: dict[str, RunSummary] = {}  # runs with a store, by name
        self.names: tuple[str, ...] = ()  # the options, in order
        self._known: set[str] = set()  # every run's name (to say why one is not offered)
        self._chose = False  # the researcher chose once (then a rescan never picks for them)

    def offer(self, runs: list[RunSummary]) -> bool:
        """Every run of the workspace, newest first: those with a store are offered, the choice kept.
        Whether the options changed."""
        self._known = {r.name for r in runs}
        stored = [r for r in runs if r.has_store]
        self.runs = {r.name: r for r in stored}
        names = tuple(r.name for r in stored)
        if names == self.names:
            return False
        keep = [n for n in self.selected if n in self.runs]
        old = self.highlighted
        highlighted = self.names[old] if old is not None and old < len(self.names) else None
        if not keep and not self._chose and names:
            last = self._remembered.probe_runs(self._workspace) if self._remembered is not None else []
            keep = [n for n in last if n in self.runs] or [names[0]]
        with self.prevent(SelectionList.SelectedChanged):
            self.clear_options()
            self.add_options([Selection(Text(n), n, n in keep) for n in names])
        self.names = names
        if highlighted in names:
            self.highlighted = names.index(highlighted)
        elif keep:
            self.highlighted = names.index(keep[0])
        return True

    def choose(self, name: str) -> str | None:
        """Tick that run, and only it; else why it cannot be."""
        if name not in self.runs:
            if name in self._known:
                return f"run {name} has no activation store (yet): `factrecall-jobs dump {name}` writes one"
            return f"no run {name!r} in the workspace"
        with self.prevent(SelectionList.SelectedChanged):
            self.deselect_all()
            self.select(name)
        self.highlighted = self.names.index(name)
        self._chose = True
        self._remember()
        return None

    def chosen(self) -> list[str]:
        """The ticked runs, in the list's order."""
        ticked = set(self.selected)
        return [n for n in self.names if n in ticked]

    def paths(self, names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(self.runs[n].path) for n in names)

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        """The researcher ticked or unticked a run (the pane hears it too: the event goes on)."""
        self._chose = True
        self._remember()

    def _remember(self) -> None:
        if self._remembered is not None and self._workspace is not None:
            self._remembered.set_probe_runs(self._workspace, self.chosen())
