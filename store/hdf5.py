"""Export a store to one HDF5 file (h5py), with the same names, dimensions and attributes.

Every coordinate becomes an HDF5 dimension scale attached to the arrays that use its dimension, so
tools that read netCDF-4 / HDF5 dimension scales (h5netcdf, xarray, MATLAB, HDFView) see labelled
dimensions. The file is written under a temporary name, chunk by chunk (never the whole store in
memory), and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from store.errors import StoreError
from store.names import ATTRS_KEY, DIMS, array_name
from store.reader import ActivationStore

COORDS = ("model", "format", "layer", "attribute", "person")


def _h5_value(values: np.ndarray) -> np.ndarray:
    return values.astype(h5py.string_dtype()) if values.dtype.kind in "UTO" else values


def export_hdf5(s: ActivationStore, path: str | Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write `s` to `path` (.h5); returns the path. `progress(done, total)` counts chunks."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a folder; give a file name such as {path / 'activations.h5'}")
    if not path.parent.is_dir():
        raise StoreError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.partial")
    g = s.group
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs[ATTRS_KEY] = json.dumps(s.meta)
            for name in (*COORDS, "attribute_index", "split", "label", "label_text", "answer", "written"):
                arr = g[name]
                d = f.create_dataset(name, data=_h5_value(s.read_array(name, ...)))
                for key, value in arr.attrs.items():
                    d.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
            for name in COORDS:
                f[name].make_scale(name)
            sites = {}
            for site, array in s.arrays.items():  # each site's vectors, under its array's name in the store
                sites[site] = f.create_dataset(
                    array_name(site), shape=array.shape, dtype=s.dtype, chunks=array.chunks, fillvalue=np.nan
                )
                for key, value in array.attrs.items():
                    sites[site].attrs[key] = value
            for name, dims in (
                *((array_name(site), DIMS) for site in s.sites),
                ("split", ("person",)),
                ("attribute_index", ("attribute",)),
                ("label", ("attribute", "person")),
                ("label_text", ("attribute", "person")),
                ("answer", ("attribute", "person")),
                ("written", ("model", "format", "person_block")),
            ):
                for axis, dim in enumerate(dims):
                    f[name].dims[axis].label = dim
                    if dim in COORDS:
                        f[name].dims[axis].attach_scale(f[dim])
            written = s.written()
            todo = [
                (m, fo, b)
                for m in range(len(s.models))
                for fo in range(len(s.formats))
                for b in range(written.shape[2])
                if written[m, fo, b]
            ]
            total, done = len(todo) * s.layers * len(s.attributes) * len(s.sites), 0
            n = len(s.people)
            for m, fo, b in todo:
                rows = slice(b * s.block, min((b + 1) * s.block, n))
                for site, out in sites.items():
                    out[m, fo, :, :, rows, :] = s.read_block(m, fo, b, site)
                    done += s.layers * len(s.attributes)
                if progress is not None:
                    progress(done, total)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
