"""Which runs the Jobs table shows, and in what order: a filter typed after `/` (as in Harlequin and
Toolong) and a sort (`o`, or a click on a column's header). Textual-free, so that it is tested alone.

The filter is words, all of which must match (case does not matter):
- `mix` matches a run whose name, strategies, status, model, preset or seed contains it;
- `status:failed`, `strategy:mix`, `seed:1`, `model:llama`, `preset:tiny`, `name:s0` match that field
  only (seed exactly; the others by containing it);
- `-word` (or `-status:done`) keeps the runs that do not match.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable

from factrecall_tui.runs import RunSummary
from jobs.words import RunStatus

FIELDS: dict[str, Callable[[RunSummary], str]] = {
    "name": lambda r: r.name,
    "status": lambda r: r.status,
    "strategy": lambda r: r.strategies,
    "model": lambda r: r.model,
    "preset": lambda r: str(r.spec.get("preset", "")),
    "seed": lambda r: r.seed,
}
EXACT = {"seed"}

# What needs a look first: running, then waiting, then what went wrong, then the rest.
STATUS_ORDER: tuple[RunStatus, ...] = ("running", "queued", "failed", "broken", "stopped", "interrupted", "new", "done")
# The sorts `o` cycles through, and the columns a click sorts by (the same keys as the table's).
SORTS: dict[str, Callable[[RunSummary], object]] = {
    "newest": lambda r: -r.mtime,
    "run": lambda r: r.name,
    "status": lambda r: STATUS_ORDER.index(r.status) if r.status in STATUS_ORDER else len(STATUS_ORDER),
    "strategy": lambda r: r.strategies,
    "seed": lambda r: (0, int(r.seed), "") if r.seed.lstrip("-").isdigit() else (1, 0, r.seed),
    "model": lambda r: r.model,
    "people": lambda r: (0, int(r.people), "") if r.people.isdigit() else (1, 0, r.people),
}


class FilterError(ValueError):
    """A filter word that names no field: said under the filter, and nothing is hidden."""


def _word_matches(run: RunSummary, word: str) -> bool:
    key, sep, value = word.partition(":")
    if sep and key in FIELDS:
        got = FIELDS[key](run).lower()
        return got == value if key in EXACT else value in got
    return any(word in get(run).lower() for get in FIELDS.values())


def matches(run: RunSummary, query: str) -> bool:
    """Whether `run` passes the filter `query` (an empty one passes every run; `check` it first)."""
    for word in query.lower().split():
        negated = word.startswith("-") and len(word) > 1
        if _word_matches(run, word[1:] if negated else word) == negated:
            return False
    return True


def check(query: str) -> None:
    """Raise FilterError for a word that names no field."""
    for word in query.lower().split():
        key, sep, _ = word.lstrip("-").partition(":")
        if sep and key not in FIELDS:
            raise FilterError(f"{key}: is not a field; filter by {', '.join(f'{k}:' for k in FIELDS)} or plain words")


def visible(
    runs: Iterable[RunSummary], query: str = "", sort: str = "newest", reverse: bool = False
) -> list[RunSummary]:
    """The runs the filter keeps, in the sort's order (ties keep the scan's order: newest first)."""
    check(query)
    kept = [r for r in runs if matches(r, query)]
    return sorted(kept, key=SORTS[sort], reverse=reverse) if sort != "newest" or reverse else kept


def to_csv(header: list[str], rows: Iterable[Iterable[object]]) -> str:
    """A table as CSV text (what `e` writes and copies)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[str(c) for c in row] for row in rows])
    return out.getvalue()
