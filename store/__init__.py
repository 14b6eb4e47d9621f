"""The cached-activation store (Zarr v3) and the analysis over it.

    import store
    s = store.open("workspace/runs/cpu-stage+mix-s0")        # a run folder, an activations.zarr, or a URL
    h = s.acts("qa", layer=3, attribute="job", model="mix")  # (people, hidden)
    y = s.labels("job")                                      # one row per person: split, label, ...
    ds = s.to_xarray()                                       # the labelled xarray.Dataset

It imports nothing from `jobs` or `factrecall_tui` (an import-linter contract holds it); the layout is
described in `store.layout`, and its names (file names, schema, formats, probe columns) in `store.names`.
"""

import importlib

from store.errors import StoreError
from store.names import SCHEMA, STORE_NAME, TRAJECTORY_NAME, VERSION

# The rest loads on first use, so `import store` (the CLI, the TUI) does not pull in zarr and numpy.
_LAZY = {
    "Layout": "store.layout",
    "Writer": "store.writer",
    "ActivationStore": "store.reader",
    "store_url": "store.reader",
    "open": "store.reader",
}

__all__ = [
    "SCHEMA",
    "STORE_NAME",
    "TRAJECTORY_NAME",
    "VERSION",
    "ActivationStore",
    "Layout",
    "StoreError",
    "Writer",
    "open",
    "store_url",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module.open_store if name == "open" else getattr(module, name)
