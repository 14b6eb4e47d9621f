"""The cached-activation store (Zarr v3) and the analysis over it.

    import store
    s = store.open("workspace/runs/cpu-stage+mix-s0")        # a run folder, an activations.zarr, or a URL
    h = s.acts("qa", layer=3, attribute="job", model="mix")  # (people, hidden)
    y = s.labels("job")                                      # one row per person: split, label, ...
    ds = s.to_xarray()                                       # the labelled xarray.Dataset

It imports nothing from `jobs` or `factrecall_tui`; the layout is described in `store.layout`.
"""

from store.layout import SCHEMA, VERSION, Layout, StoreError, Writer
from store.reader import STORE_NAME, ActivationStore, store_url
from store.reader import open_store as open  # noqa: A001 - `store.open(path)` reads as intended

__all__ = ["SCHEMA", "STORE_NAME", "VERSION", "ActivationStore", "Layout", "StoreError", "Writer", "open", "store_url"]
