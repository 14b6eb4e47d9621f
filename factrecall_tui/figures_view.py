"""The Figures screen (`g` on the Report tab): a study's report figures, the PNGs report.md links,
drawn in the terminal by textual-image: with the terminal's graphics protocol where it has one (Kitty's,
or Sixel), else with coloured half blocks (Unicode characters where there is no terminal at all).

textual-image asks the terminal what it can draw when it is imported, which it cannot do once Textual
runs: this module is imported with the app (factrecall_tui/app.py), before the app starts."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Header, OptionList, Static
from textual.widgets.option_list import Option
from textual_image.widget import Image

from factrecall_tui.escape import escaped
from factrecall_tui.quiet import Footer, Line
from jobs.shown import visible


class FiguresScreen(Screen):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]
    HELP = (
        "Figures",
        "The study's report figures (its PNGs), drawn in the terminal: with its graphics protocol "
        "where it has one, else in half blocks. ↑/↓ choose a figure.",
    )

    def __init__(self, study: str, figures: list[tuple[str, Path]]):
        super().__init__()
        self.study, self.figures = study, figures
        self.shown: Path | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        # A figure's name is the report's words: text, never markup.
        yield Line(
            f"[b]{escaped(self.study)}[/] · report figures · [dim]{len(self.figures)} PNGs[/]", id="figures-title"
        )
        with Horizontal(id="figures-body"):
            yield OptionList(
                *(Option(Content(visible(name)), id=str(i)) for i, (name, _) in enumerate(self.figures)),
                id="figures-list",
            )
            yield Image(None, id="figures-image")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        if self.figures:
            self._show(0)

    @on(OptionList.OptionHighlighted, "#figures-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self._show(int(event.option.id))

    def _show(self, index: int) -> None:
        name, path = self.figures[index]
        self.shown = path
        self.query_one("#figures-image", Image).image = path
        self.query_one("#figures-title", Static).update(
            f"[b]{escaped(self.study)}[/] · {escaped(name)} · [dim]{escaped(path)}[/]"
        )
