"""The key a cached result is kept under in the store (probe sweeps, `store.probes`; patching results,
`store.interventions`).

A result is served again while its key is unchanged, so the key holds everything that decides its
numbers, each named explicitly:

- `kind` and `version`: which computation made it, and an explicit version number of that computation,
  bumped by hand when a change of code alters the numbers (`PROBE_VERSION`, `PATCH_VERSION`; the
  golden tests in tests/test_golden_results.py fail when the numbers change and the version does not);
- `settings`: the frozen dataclass it was asked for with (store/settings.py), every field;
- the store's fingerprint (its layout and its models' weights) and the model's name;
- the major.minor versions of the libraries that compute it (`libraries`);
- anything else, by keyword (`extra`).

Source code is not in the key: editing a comment, a table helper or a module the numbers do not pass
through keeps every cached result, and a change that does alter them is a version bump.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
from collections.abc import Sequence
from typing import Any

KEY_CHARS = 20  # hex digits of a key: a group name in the store


def library_version(name: str) -> str:
    """The major.minor version of an importable library (`torch` 2.13.0+cpu -> "2.13"): a patch release
    or another build of the same release keeps the cached results."""
    version = str(getattr(importlib.import_module(name), "__version__", ""))
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        raise ValueError(f"{name} has no major.minor version ({version!r})")
    return f"{found[1]}.{found[2]}"


def result_key(
    kind: str,
    version: int,
    settings: Any,
    store_fingerprint: str | None,
    *,
    model: str,
    libraries: Sequence[str] = (),
    **extra: Any,
) -> str:
    """The key of the result of computation `kind` at `version` with `settings` (a dataclass instance),
    for `model` of the store whose fingerprint is `store_fingerprint`, computed by `libraries` (names
    of importable packages: their major.minor versions are part of it), and `extra` (JSON values)."""
    if not kind or not isinstance(kind, str):
        raise ValueError(f"a result's kind is a name, not {kind!r}")
    if type(version) is not int or version < 1:
        raise ValueError(f"a computation's version is a whole number from 1, not {version!r}")
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"settings are a dataclass instance, not {type(settings).__name__}")
    ident = {
        "kind": kind,
        "version": version,
        "settings": dataclasses.asdict(settings),
        "store": store_fingerprint,
        "model": model,
        "libraries": {name: library_version(name) for name in libraries},
    }
    clash = sorted(set(extra) & set(ident))
    if clash:
        raise ValueError(f"{clash[0]!r} is part of every key; give it by its own argument")
    ident.update(extra)
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]
