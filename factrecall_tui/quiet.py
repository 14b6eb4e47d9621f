"""Widgets that redraw only when what they show changed.

Textual redraws on request, not on change: `Static.update` lays out and redraws the screen even for
the same text, and the Footer rebuilds its keys every time the focus or the bindings move, even to
the same keys. The app says things again on every workspace scan (once a second) and moves the
focus on every tab switch, so at 300 runs those redraws were most of what a key cost (the table's
scroll bar redrawn every second; the Footer rebuilt at each of a tab switch's focus moves). `benchmarks/bench_tui.py`
measures it.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.visual import VisualType
from textual.widget import Widget
from textual.widgets import DataTable as TextualDataTable
from textual.widgets import Static


class Line(Static):
    """A Static that redraws only when what it says changes."""

    def update(self, content: VisualType = "", *, layout: bool = True) -> None:
        if type(content) is type(self.content) and content == self.content:
            return
        super().update(content, layout=layout)


class Footer(Widget):
    """The keys in effect, as Textual's Footer shows them (the focused widget's, its pane's, the
    screen's and the app's, each action once; the command palette's at the right), drawn as one line
    and redrawn only when they change. Textual's Footer is a widget per key, rebuilt whenever the focus
    moves: a layout of the whole screen, twice a tab switch. A click on a key presses it."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"footer--key", "footer--description", "footer--palette"}
    DEFAULT_CSS = """
    Footer {
        dock: bottom;
        height: 1;
        text-wrap: nowrap;
        text-overflow: clip;
        color: $footer-foreground;
        background: $footer-background;
        & > .footer--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        & > .footer--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
        & > .footer--palette {
            color: $foreground 20%;
        }
    }
    """

    _keys: tuple = ()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        shown: dict[str, tuple] = {}
        for key, (_, binding, enabled, _tooltip) in screen.active_bindings.items():
            if binding.show and binding.action not in shown:  # an action bound to several keys: its first
                shown[binding.action] = (key, self.app.get_key_display(binding), binding.description, enabled)
        palette = screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        keys = (
            tuple(shown.values()),
            None
            if palette is None or not self.app.ENABLE_COMMAND_PALETTE
            else (
                palette.binding.key,
                self.app.get_key_display(palette.binding),
                palette.binding.description,
                palette.enabled,
            ),
        )
        if keys != self._keys:
            self._keys = keys
            self.refresh()

    def action_press(self, key: str) -> None:
        self.app.simulate_key(key)

    def render(self) -> Text:
        key_style = self.get_component_rich_style("footer--key")
        description_style = self.get_component_rich_style("footer--description")
        line = Text(no_wrap=True, overflow="crop")
        keys, palette = self._keys or ((), None)

        def add(key: str, display: str, description: str, enabled: bool, pad: str = " ") -> None:
            click = Style(meta={"@click": f"press({key!r})"}, dim=not enabled)
            line.append(f"{pad}{display} ", key_style + click)
            if description:
                line.append(f"{description} ", description_style + click)

        for key in keys:
            add(*key)
        if palette is not None:  # at the right, as in Textual's Footer: the keys cropped before it
            keys_line, line = line, Text(no_wrap=True)
            add(*palette, pad="")
            room = max(0, self.size.width - line.cell_len - 1)
            keys_line.truncate(room, pad=True)
            keys_line.append("▏", self.get_component_rich_style("footer--palette"))
            line = keys_line.append_text(line)
        return line


class DataTable(TextualDataTable):
    """Textual's DataTable, keeping what it rendered while its size and styles stay the same.

    Textual's DataTable forgets every cell it rendered when it is told its size or its styles changed,
    and it is told both whenever its tab is shown again (a Resize at the size it had; the CSS applied
    again, changed or not), so each tab switch rendered every visible cell again: at 300 runs, most
    of what the switch cost. Here a Resize to the size it already had is ignored, and the caches are
    cleared only when the table's rules differ from those it last rendered with in the same state
    (focused or not, hovered or not), which the cells' cache keys hold."""

    _rendered_with: dict | None = None
    _size_seen: Size | None = None

    def _on_resize(self, event: events.Resize) -> None:
        if event.size == self._size_seen:
            event.prevent_default()  # DataTable's own handler would forget every rendered cell
            return
        self._size_seen = event.size

    def notify_style_update(self) -> None:
        state = self.get_pseudo_class_state()
        # The table's own rules. Not its component classes' (the cursor's, the header's): this runs before
        # the style pass updates those, so they lag a pass behind; a theme changes the table's own too.
        rules = (self.styles.base._rules.copy(), self.styles.inline._rules.copy())
        if self._rendered_with is None:
            self._rendered_with = {}
        if self._rendered_with.get(state, rules) != rules:
            # The rules of a state it rendered in moved (a theme changed): nothing rendered holds.
            self._rendered_with = {state: rules}
            super().notify_style_update()
            return
        self._rendered_with[state] = rules
        Widget.notify_style_update(self)
        # The cells, rows and lines rendered are keyed by the state they were rendered in; these two
        # caches are not (the cursor's colour differs with the focus), and cost little to fill again.
        self._get_styles_to_render_cell.cache_clear()
        self._styles_cache.clear()
