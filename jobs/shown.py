"""How text from outside is shown on a terminal: the one sanitizer every printed string goes through.

A string factrecall did not write itself (a name or an error read from a handed-over run folder,
store, study, queue entry, manifest or settings file; a flag's value) may hold control characters: an
ESC that starts a sequence rewriting the window's title or the clipboard (OSC 0, OSC 52) or clearing
the screen (CSI 2J), C1 controls that some terminals take as ESC, a lone surrogate that cannot be
encoded at all, or bidirectional overrides that make text read other than it is. Rich and Textual
strip BEL and a few others, not ESC. Here:

- `visible(text)`: every such character written out as its escape (`\\x1b`, `\\x9b`, `\\u202e`), so
  the terminal shows it and never acts on it; newlines too, unless the text is meant to span lines;
- `markup(text)`: `visible`, then escaped for Rich/Textual markup, for a string placed inside a
  markup string the product wrote (`f"[red]error:[/red] {markup(message)}"`): a `[/]` in a recorded
  error is shown, never parsed;
- `SafeConsole`: a Rich console that makes every string visible where it becomes text (so widths
  are right), and passes every piece of text it writes through `visible` once more (the styles it
  adds are its own), so nothing printed by the CLI reaches the terminal raw, whatever the call site;
  the app's frames go through `factrecall_tui.app`'s line filter the same way;
- `safe_streams()`: stdout and stderr that replace what their encoding cannot show (an ASCII-only
  locale) instead of raising.
"""

from __future__ import annotations

import re
import sys

from rich.console import Console
from rich.markup import escape
from rich.segment import Segment

# C0 controls but tab and newline, DEL, C1 controls, lone surrogates, and the bidirectional
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_UNSAFE_LINES = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, lines: bool = False) -> str:
    """`text` (str() of it) with every control character, lone surrogate and bidirectional override
    written as its escape; a newline too unless `lines` (text meant to span lines)."""
    text = text if isinstance(text, str) else str(text)
    pattern = _UNSAFE if lines else _UNSAFE_LINES
    return text if pattern.search(text) is None else pattern.sub(_escape, text)


def markup(text: object) -> str:
    """`text` made visible and escaped for markup: safe to place inside a markup string."""
    return escape(visible(text))


def safe_segments(segments):
    """Segments with every piece of text made `visible` (newlines kept: they are the layout's); a
    control segment (a cursor move of a live display) is the renderer's own and passes as it is."""
    for segment in segments:
        text, style, control = segment
        if not control and _UNSAFE.search(text) is not None:
            yield Segment(visible(text, lines=True), style, control)
        else:
            yield segment


class SafeConsole(Console):
    """A Rich console that writes no control character it was handed: `Console._render_buffer` is
    where Rich turns segments into the characters it writes (every print, table, progress bar and
    live display); each piece of text is made visible there, before the styles' own codes are added.
    (A private method, stable since Rich 10; tests/jobs/test_shown.py fails if it is renamed.)"""

    def render_str(self, text: str, **kwargs):
        # Where a string becomes Text (print, table cells): made visible first, so widths are right.
        return super().render_str(visible(text, lines=True), **kwargs)

    def _render_buffer(self, buffer):
        return super()._render_buffer(safe_segments(buffer))


def safe_streams() -> None:
    """stdout and stderr that write `?` for a character their encoding cannot (LC_ALL=C), rather than
    ending the command with a UnicodeEncodeError over a `·` in a title."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding not in ("utf8", "utf16", "utf32") and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):  # a stream that cannot be reconfigured: left as it is
                pass
