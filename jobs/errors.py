"""Errors a user can cause. Each carries a one-line message that says what to do; the CLI and TUI
catch `FactrecallError` once, print the line, and exit non-zero (no traceback)."""


class FactrecallError(Exception):
    """A problem with the user's input or environment, described in one actionable line."""


class SpecError(FactrecallError):
    """An invalid setting, preset, or config file."""


class RunFolderError(FactrecallError):
    """A run folder that is missing, locked, or belongs to a different experiment."""


class TokenizerTemplateError(FactrecallError):
    """A tokenizer that does not split prompt + answer at the answer's first token."""
