"""How the Store pane words a node, without Textual: its line in the tree and its metadata, as rich
text. Everything a store says (names, attributes, errors quoting them) is text, never markup, with its
control characters written out (`jobs.shown.visible`)."""

from __future__ import annotations

import json

from rich.console import Group
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from factrecall_tui.store_browse import NodeInfo, clip
from jobs.shown import visible


def node_label(node: NodeInfo) -> Text:
    """A node's line in the tree: the store's words as text (a str label would be parsed as markup)."""
    name = visible(node.name)
    if node.kind == "broken":
        return Text(f"⚠ {name}", style="red")
    if node.kind == "group":
        settings = node.attrs.get("settings")
        if isinstance(settings, dict) and "model" in node.attrs:  # a cached probe result (store.probes)
            label = Text(
                visible(f"{node.attrs['model']} · {settings.get('attribute', '?')} · {settings.get('bio', '?')} ")
            )
            return label.append(name, style="dim")
        return Text(f"{name}/", style="bold")
    label = Text(name)
    label.append(visible(f" {'×'.join(map(str, node.shape)) or 'scalar'} {node.dtype}"), style="dim")
    return label


def sites_line(sites: list[tuple[str, str]]) -> Text:
    """The store's capture sites, each with the array that holds it: `2 sites: resid_mid@last →
    array resid_mid · mlp_out@subject_last → array mlp_out@subject_last`."""
    line = Text(f"{len(sites)} site{'s' * (len(sites) != 1)}: ", style="dim")
    for i, (site, array) in enumerate(sites):
        if i:
            line.append(" · ", style="dim")
        line.append(visible(site), style="bold")
        line.append(f" → array {visible(array)}", style="dim")
    return line


def node_info(node: NodeInfo, written: int | None, site: str | None = None) -> tuple[str, Group]:
    """A node's metadata (path, kind, the capture `site` an array holds, shape, dims, dtype, chunks,
    `written` of them where the store says, fill value, codecs; a group's members; a broken node's
    error) and its attributes as JSON: as plain text, and as shown."""
    lines: list[tuple[str, str]] = [("path", "/" + node.path), ("kind", node.kind)]  # made visible below
    if site is not None:
        lines.append(("site", site))
    if node.kind == "array":
        chunks = f"{written} of {node.nchunks} written" if written is not None else f"{node.nchunks} in the grid"
        lines += [
            ("shape", str(node.shape)),
            ("dims", " × ".join(node.dims) if node.dims else "(none)"),
            ("dtype", node.dtype),
            ("chunks", f"{node.chunks} · {chunks}"),
            ("fill value", node.fill_value),
            ("codecs", node.codecs or "(none)"),
        ]
    elif node.kind == "group":
        lines.append(("members", str(node.children)))
    else:
        lines.append(("error", node.error))
    lines = [(key, visible(value)) for key, value in lines]
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in lines:
        grid.add_row(key, Text(value, style="red" if key == "error" else ""))
    # JSON escapes C0 controls in strings, not C1 ones nor bidirectional overrides: written out too.
    attrs = json.dumps(clip(node.attrs), indent=2, ensure_ascii=False, default=str) if node.attrs else "{}"
    attrs = visible(attrs, lines=True)
    text = "\n".join(f"{k}: {v}" for k, v in lines) + "\nattributes\n" + attrs
    return text, Group(grid, Text("attributes", style="bold"), JSONHighlighter()(Text(attrs)))
