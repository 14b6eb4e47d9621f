"""The help screen (`?` or F1): every key the screen underneath answers, grouped by where it works
(the widget with the focus, the screen, everywhere), and what the screen is for. It is built from
the bindings in effect when it opens (Textual's `active_bindings`), hidden ones included, so it can
never list a key that does nothing nor miss one a pane adds. Escape, `q`, `?` or F1 closes it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from factrecall_tui.escape import escaped

# What each tab is for, in one sentence (the README says more).
ABOUT = {
    "jobs": "Every run in the workspace, its status and progress. Enter or a click selects a run; the keys "
    "below act on the selected one. / filters (mix, status:failed, seed:1, -strategy:qa), o or a "
    "click on a header sorts.",
    "accuracy": "Figure 1 (QA out per attribute) and Figure 5 (BIO, QA in, QA out) across runs; seeds of "
    "one configuration as mean ± population std.",
    "probes": "Linear probes per layer (Figures 3 and 4): choose runs, attribute, format, splits and the "
    "site (one the stores hold), then fit; ± is the sample std over seeds.",
    "store": "A run's activation store as a tree, its sites listed; type a numpy index to preview a slice.",
    "report": "The workspace's studies (factrecall-jobs reproduce), their progress, verdicts and report.",
}


@dataclass(frozen=True)
class Key:
    keys: str  # as the footer shows them, e.g. "^s" or "enter"
    description: str
    enabled: bool


@dataclass(frozen=True)
class Group:
    title: str
    keys: list[Key]


def keys_of(app: App, screen: Screen) -> list[Group]:
    """The keys `screen` answers now, grouped by the node that binds them: the panes' own first, the
    screen's next, the app's (everywhere) after them, a built-in widget's generic keys last. A key bound
    twice is listed where it takes effect (the innermost binding)."""
    groups: dict[int, tuple[str, list[Key]]] = {}
    for key, active in screen.active_bindings.items():
        node, binding = active.node, active.binding
        if binding.action in ("help", "app.help"):
            continue
        if node is app:
            title = "Everywhere"
        elif node is screen:  # the tabs' own screen is Textual's plain one: its keys move the focus
            title = "Moving around" if type(screen) is Screen else f"This screen ({_name(screen)})"
        else:
            title = _name(node)
        shown = app.get_key_display(Binding(key, binding.action, binding.description, key_display=binding.key_display))
        description = binding.description or binding.action.replace("_", " ")
        groups.setdefault(id(node), (title, []))[1].append(Key(shown, description, active.enabled))

    # What this screen is for first (a pane's own keys, the screen's), then everywhere, then the generic
    # keys of a built-in widget (a table's cursor, a text field's editing), which every app shares.
    def rank(group: tuple[str, list[Key]]) -> int:
        title = group[0]
        return (
            3
            if title in GENERIC.values()
            else 2
            if title == "Everywhere"
            else 1
            if title.startswith("This screen") or title == "Moving around"
            else 0
        )

    return [Group(title, keys) for title, keys in sorted(groups.values(), key=rank)]


def _name(node) -> str:
    """A node as a user knows it: `JobsPane` is "Jobs", a DataTable "the table"."""
    cls = type(node).__name__
    for suffix in ("Pane", "Screen", "View"):
        if cls.endswith(suffix) and cls != suffix:
            return cls.removesuffix(suffix)
    return GENERIC.get(cls, cls)


GENERIC = {
    "DataTable": "The table",
    "Input": "A text field",
    "Select": "A drop-down",
    "Tree": "The tree",
    "SelectionList": "A list",
    "Checklist": "A list",
    "Log": "The log",
    "VerticalScroll": "Scrolling",
    "OptionList": "A list",
    "Markdown": "The text",
}


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, title: str, about: str, groups: list[Group]):
        super().__init__()
        self.title_text, self.about, self.groups = title, about, groups

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(f"[b]{escaped(self.title_text)}[/b] · [dim]escape closes[/]", id="help-title")
            if self.about:
                yield Static(escaped(self.about), id="help-about")
            with VerticalScroll(id="help-keys"):
                # One text for every group (not a table widget each): the help opens in a frame's time.
                width = max([10, *(len(key.keys) for group in self.groups for key in group.keys)])
                lines = []
                for group in self.groups:
                    lines.append(f"[b $accent]{escaped(group.title)}[/]")
                    for key in group.keys:
                        description = (
                            escaped(key.description) if key.enabled else f"[dim]{escaped(key.description)} (not now)[/]"
                        )
                        lines.append(f"[b]{escaped(key.keys.ljust(width))}[/]  {description}")
                    lines.append("")
                yield Static("\n".join(lines[:-1]), id="help-table")
