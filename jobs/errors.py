"""Errors a user can cause. Each carries a one-line message that says what to do; the front doors
(the CLI and the app) catch `USER_ERRORS` once, show the line, and exit non-zero (no traceback).

There are two roots, with no translation between them: `FactrecallError` here and the store's
`StoreError` (`store` imports nothing from `jobs`, so its errors cannot derive from these)."""

from store.errors import StoreError


class FactrecallError(Exception):
    """A problem with the user's input or environment, described in one actionable line."""


class SpecError(FactrecallError):
    """An invalid setting, preset, or config file."""


class RunFolderError(FactrecallError):
    """A run folder that is missing, locked, or belongs to a different experiment."""


class TokenizerTemplateError(FactrecallError):
    """A tokenizer that does not split prompt + answer at the answer's first token."""


USER_ERRORS = (FactrecallError, StoreError)


def first_line(err: BaseException, with_type: bool = False) -> str:
    """An exception as one line for a message: its first line (its type's name when it says nothing),
    prefixed with the type's name with `with_type` (for errors a user did not cause)."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    return f"{type(err).__name__}: {lines[0]}" if with_type else lines[0]
