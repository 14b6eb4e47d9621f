"""A file's words inside markup the app wrote, as Textual parses it.

`Static.update(str)`, `Label`, an `Option`'s prompt, `Confirm`'s question: Textual parses a str there
as its own content markup, which is not Rich's. Rich opens a tag only at `[` followed by a letter,
`#`, `/` or `@`, so `rich.markup.escape` (and `jobs.shown.markup`, made for Rich's console and Rich's
`Text.from_markup`) leaves `[2J` alone; Textual opens a tag at every `[` not preceded by a backslash,
so a recorded error holding `\\x1b[2J` swallows the app's next tag (`[dim]`) and the app's `[/]` then
closes nothing: a MarkupError, raised while drawing, ends the app. Here every `[` is escaped.

Text that needs no markup around it goes in as `textual.content.Content(visible(text))` instead.
"""

from __future__ import annotations

from jobs.shown import visible

_ZERO_WIDTH_SPACE = "\u200b"


def escaped(text: object) -> str:
    """`text` (str() of it) for a Textual markup string the app writes, e.g.
    `f"[b]{escaped(run.name)}[/]"`: control characters written out (`jobs.shown.visible`), every `[`
    shown as it is, and a trailing backslash kept from escaping the app's next tag (Textual takes any
    `\\[` for a literal bracket): a zero-width space goes between them."""
    out = visible(text).replace("[", "\\[")
    return out + _ZERO_WIDTH_SPACE if out.endswith("\\") else out
