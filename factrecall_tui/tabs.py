"""The app's tabs: Textual's TabbedContent, keeping the tab the user chose.

TabbedContent shows the pane in which a widget takes the focus. When a tab is hidden, the widget that
had the focus there is blurred and Textual gives the focus to the next focusable widget, which can be
in the pane just hidden: TabbedContent then shows that pane again, and with focus callbacks queued
for several panes the app can go on switching tabs by itself (Textual issue 4955; keys then reach
whichever pane has the focus). Here a focus that lands in a hidden pane moves to the shown one
instead, and switching tabs clears the focus first, then gives it to the shown pane at once.
"""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import TabbedContent, TabPane


class Tabs(TabbedContent):
    """TabbedContent whose shown tab changes only when the app (the user's key or click) changes it."""

    def show(self, tab: str) -> None:
        """Show `tab`, its first focusable widget focused (keys go to what is shown)."""
        if self.active != tab:
            self.screen.set_focus(None)  # nothing in the pane about to hide is left to reset the focus
            self.active = tab
        self.focus_shown()

    def focus_shown(self) -> None:
        first = self._first_focusable(self.active)
        if (
            first is not None
            and self.screen.focused is not first
            and not self._is_inside(self.screen.focused, self.active)
        ):
            first.focus(scroll_visible=False)

    def _first_focusable(self, tab: str) -> Widget | None:
        if not tab:
            return None
        # The screen's focus chain, not `focusable`: a widget inside a hidden container (display: none,
        # such as the Jobs filter until `/`) is `focusable` but must not take the keys.
        return next((w for w in self.screen.focus_chain if self._is_inside(w, tab)), None)

    def _is_inside(self, widget: Widget | None, tab: str) -> bool:
        pane = self.get_pane(tab) if tab else None
        return widget is not None and pane is not None and pane in widget.ancestors

    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        """A widget of a pane took the focus: only the shown pane's may keep it."""
        event.stop()
        event.prevent_default()  # TabbedContent's own handler (show that pane) must not run after this one
        if event.tab_pane.id != self.active:
            self.focus_shown()
