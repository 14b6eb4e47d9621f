"""Rich progress bars that follow a run's events (the same events that go to events.jsonl)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from jobs.run.events import Event


class ConsoleProgress:
    """A listener for `RunFolder.listeners`: one bar per step, with loss, tokens/s and the latest
    accuracy sample while training."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.curve: dict[str, str] = {}

    def __enter__(self) -> ConsoleProgress:
        if self.console.is_terminal:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if event["kind"] == "note":  # a line the researcher should read, terminal or not
            self.console.print(f"[yellow]note:[/yellow] {event['text']}", highlight=False, soft_wrap=True)
            return
        if not self.console.is_terminal:
            self._line(event)
            return
        kind, step = event["kind"], event.get("step")
        if kind == "start":
            self.tasks[step] = self.progress.add_task(step, total=event["total"], info="")
        elif kind == "progress" and step in self.tasks:
            info = []
            if "loss" in event:
                info.append(f"loss {event['loss']:.3f}  {event['tokens_per_s']:,.0f} tok/s")
            if "curve" in event:
                c = event["curve"]
                self.curve[step] = "  ".join(f"{k} {c[k]:.0f}%" for k in ("bio", "qa_in", "qa_out") if k in c)
            if step in self.curve:
                info.append(self.curve[step])
            self.progress.update(self.tasks[step], completed=event["done"], info="  ".join(info))
        elif kind == "step" and event.get("status") == "done":
            if step in self.tasks:
                total = self.progress.tasks[self.tasks[step]].total or 1  # a step without a count: None
                self.progress.update(self.tasks[step], total=total, completed=total)
            elif "reused_from" in event:
                self.console.print(
                    f"[dim]{step}: reused from run {event['reused_from']} (same seed, data and settings)[/dim]"
                )
            else:
                self.console.print(f"[dim]{step}: done[/dim]")

    def _line(self, event: Event) -> None:
        """Without a terminal (a log, CI), bars would print as dots: one line per finished step instead."""
        if event["kind"] != "step" or event.get("status") != "done":
            return
        details = {k: v for k, v in event.items() if k not in ("time", "kind", "step", "status")}
        shown = ", ".join(f"{k} {_number(v)}" for k, v in details.items())
        self.console.print(f"{event['step']}: done" + (f" ({shown})" if shown else ""), highlight=False, soft_wrap=True)


def _number(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)
