"""What a step's name says of its done marker (`done/<step>.json`, written by
`jobs.run.folder.RunFolder.mark_done`): the files the step leaves behind, checked even on markers
older than recorded outputs, and where an evaluation's results go in metrics.json; with the paths
into metrics.json's nested tables that results are written and looked up by.
"""

from __future__ import annotations

from typing import Any


def implied_outputs(step: str) -> list[str]:
    """What a step leaves behind, by its name: checked to exist even on markers written before
    markers recorded their outputs."""
    if step == "data":
        return ["data/people.jsonl", "data/bio.jsonl", "data/prompts.jsonl"]
    if step == "tokenizer":
        return ["data/targets.jsonl"]
    if step == "init":
        return ["checkpoints/init/model.safetensors"]
    if step.startswith("train-"):
        return [f"checkpoints/{step.removeprefix('train-')}/final/model.safetensors"]
    if step in ("dump", "dump-trajectory"):
        return [f"{'activations' if step == 'dump' else 'trajectory'}.zarr/zarr.json"]
    return []


def metrics_key(step: str) -> tuple[str, ...] | None:
    """Where an evaluation step's results go in metrics.json (a snapshot's under `snapshots`)."""
    if not step.startswith("eval-"):
        return None
    name = step.removeprefix("eval-")
    return ("snapshots", name) if "@" in name else (name,)


def set_in(tree: dict, key: tuple[str, ...], value: Any) -> None:
    """tree[key[0]][key[1]]... = value, making the tables on the way (a non-table there is replaced)."""
    for part in key[:-1]:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[key[-1]] = value


def get_in(tree: Any, key: tuple[str, ...]) -> Any:
    """tree[key[0]][key[1]]..., or None where a table on the way lacks the key."""
    for part in key:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree
