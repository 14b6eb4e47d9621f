"""What every verb shares: the console it prints to, and a layer table's rows."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jobs.errors import FactrecallError
from jobs.shown import SafeConsole

# Piped into a file or a pager, rich would assume 80 columns and cut the probe table's headers and
# wrap every ±: there, tables get the width they need (COLUMNS still sets it).
console = SafeConsole(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)


def workspace_of(text: str) -> Path:
    if not text.strip():
        raise FactrecallError(
            "the workspace is empty (--workspace '' or FACTRECALL_WORKSPACE= ?); give a folder, e.g. --workspace "
            "workspace"
        )
    return Path(text).expanduser()


def layer_rows(table, labels: list[str], rows, cells) -> None:
    """A per-layer table of `probe` or `patch`: a column per label, a row per layer (`cells(row)`), printed."""
    table.add_column("layer", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    for _, r in rows.iterrows():
        table.add_row(str(int(r["layer"])), *cells(r))
    console.print(table)


def write_csv(csv: Path | None, df) -> None:
    from jobs.run.files import atomic_write_bytes

    if csv is not None:
        atomic_write_bytes(csv, df.to_csv(index=False).encode())
        console.print(f"wrote {csv}", soft_wrap=True)


def print_tables(paths: list[Path]) -> None:
    from jobs.run.tables import tables

    for table in tables(paths):
        console.print(table)
