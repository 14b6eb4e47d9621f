"""`factrecall-tui`: browse a workspace's runs and their exact-match accuracies (Figure 1 and 5).

Keys: ↑/↓ choose a run, r reload, q quit.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Label, ListItem, ListView, Static

from factrecall_tui.runs import RunSummary, scan
from jobs.report import ATTRIBUTE_LABELS, MODELS, SET_LABELS
from jobs.spec import ATTRIBUTES

STATUS_STYLE = {"done": "green", "running": "yellow", "failed": "red", "interrupted": "magenta", "new": "dim"}


class RunItem(ListItem):
    def __init__(self, run: RunSummary):
        super().__init__(Label(f"[{STATUS_STYLE[run.status]}]●[/] {run.name}"))
        self.run = run


class FactrecallApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "factrecall"
    BINDINGS = [Binding("r", "reload", "Reload"), Binding("q", "quit", "Quit")]

    def __init__(self, workspace: Path):
        super().__init__()
        self.workspace = workspace
        self.runs: list[RunSummary] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield ListView(id="runs")
            with Vertical(id="detail"):
                yield Static("", id="title")
                yield Static("Figure 5 · exact match (%)", classes="caption")
                yield DataTable(id="fig5", cursor_type="row", zebra_stripes=True)
                yield Static("Figure 1 · QA out-of-distribution exact match (%)", classes="caption")
                yield DataTable(id="fig1", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.workspace)
        self.query_one("#fig5", DataTable).add_columns("Model", *SET_LABELS.values())
        self.query_one("#fig1", DataTable).add_columns("Model", "Ave", *(ATTRIBUTE_LABELS[a] for a in ATTRIBUTES))
        self.action_reload()

    def action_reload(self) -> None:
        self.runs = scan(self.workspace)
        runs = self.query_one("#runs", ListView)
        runs.clear()
        runs.extend(RunItem(r) for r in self.runs)
        if self.runs:
            runs.index = 0
            self.show_run(self.runs[0])
        else:
            self.query_one("#title", Static).update(
                f"No runs in {self.workspace / 'runs'} yet: start one with `factrecall-jobs run`."
            )

    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        if isinstance(event.item, RunItem):
            self.show_run(event.item.run)

    def show_run(self, run: RunSummary) -> None:
        status = run.status
        if status == "running" and run.last_event.get("kind") == "progress":
            e = run.last_event
            status += f": {e['step']} {e['done']}/{e['total']}"
        self.query_one("#title", Static).update(f"{run.title}\n[{STATUS_STYLE[run.status]}]{status}[/]")
        fig5, fig1 = self.query_one("#fig5", DataTable), self.query_one("#fig1", DataTable)
        fig5.clear()
        fig1.clear()
        for key, label in MODELS.items():
            m = run.metrics.get(key)
            if not m:
                continue
            fig5.add_row(label, *(_pct(m.get(s, {}).get("avg")) for s in SET_LABELS))
            out = m.get("qa_out", {})
            fig1.add_row(label, _pct(out.get("avg")), *(_pct(out.get(a)) for a in ATTRIBUTES))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="factrecall-tui", description="Browse factrecall runs and their accuracies.")
    ap.add_argument("--workspace", default=os.environ.get("FACTRECALL_WORKSPACE", "workspace"),
                    help="folder holding runs/ (default: ./workspace, or $FACTRECALL_WORKSPACE)")
    args = ap.parse_args(argv)
    FactrecallApp(Path(args.workspace).expanduser()).run()
    return 0
