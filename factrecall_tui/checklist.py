"""A list of check boxes that read the same in any terminal: a checked box holds a ✓ and an unchecked
one is empty (Textual's SelectionList draws an X in both and tells them apart by colour alone, which
a 256-colour terminal or a colour-blind reader may not see)."""

from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import SelectionList
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.selection_list import SelectionType

CHECKED, UNCHECKED = "✓", " "


class Checklist(SelectionList[SelectionType]):
    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        if len(segments) < 3 or segments[1].text != ToggleButton.BUTTON_INNER:
            return strip  # not a line with a box (past the last option)
        index = self.scroll_offset[1] + y
        checked = self.get_option_at_index(index).value in self.selected
        segments[1] = Segment(CHECKED if checked else UNCHECKED, segments[1].style, segments[1].control)
        return Strip(segments, strip.cell_length)
