"""The store's one error type (importable without zarr, for a fast CLI and TUI start)."""


def first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class StoreError(Exception):
    """A store that is missing, foreign, newer, truncated, or asked for what it does not hold; the
    message is one line saying what to do."""
