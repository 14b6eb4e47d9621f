"""Opening a store: `store.open(path)` (`open_store`) -> `ActivationStore`.

import store
s = store.open("workspace/runs/cpu-stage+mix-s0")    # a run folder, a .zarr folder, or a URL
h = s.acts("qa", layer=3, attribute="job", model="mix")   # (people, hidden) float16
y = s.labels("job")                                   # pandas: person, split, label, label_text, answer
ds = s.to_xarray()                                    # the labelled Dataset, lazily
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec
from zarr.storage import LocalStore

from store.errors import StoreError, first_line
from store.fileio import RECORD, Unreadable, read_regular
from store.layout import chunk_crc, open_checked
from store.names import (
    ATTRS_KEY,
    DEFAULT_SITE,
    SPLITS,
    STORE_NAME,
    TRAJECTORY_NAME,
    array_name,
    checksum_name,
    parse_site,
)
from store.validate import is_local, local_path


def store_url(path: str | Path) -> str:
    """A run folder means its `activations.zarr`; anything else is the store itself."""
    if is_local(path) and (local_path(path) / "spec.json").exists():
        return str(local_path(path) / STORE_NAME)
    return str(path)


class ActivationStore:
    """A factrecall activation store, opened for reading."""

    def __init__(self, url: str | Path):
        self.url = store_url(url)
        # Checked against the schema, its bounds and its fingerprint before anything is read
        # (store.validate): what follows may trust the attributes and the arrays' shapes.
        self.group, coords = open_checked(self.url, mode="r")
        self.meta: dict[str, Any] = dict(self.group.attrs[ATTRS_KEY])
        self.models: tuple[str, ...] = tuple(self.meta["models"])
        self.formats: tuple[str, ...] = tuple(self.meta["formats"])
        self.attributes: tuple[str, ...] = tuple(self.meta["attributes"])
        self.layers: int = self.meta["layers"]
        self.hidden: int = self.meta["hidden"]
        self.dtype = np.dtype(self.meta["dtype"])
        self.block: int = self.meta["chunk_people"]
        self.people: np.ndarray = coords.people
        self.split: np.ndarray = coords.split
        # The sites it holds, an array each; a store made before sites holds resid_mid@last alone.
        self.sites: tuple[str, ...] = tuple(self.meta.get("sites", [DEFAULT_SITE]))
        self._coords = coords
        try:
            self.arrays = {site: self.group[array_name(site)] for site in self.sites}
            self._sums = {site: self.group[checksum_name(site)] for site in self.sites}
            self.resid = self.arrays[self.sites[0]]  # the store's first site (resid_mid@last unless dumped otherwise)
            self.written()
        except (ValueError, RuntimeError, OSError, KeyError, zarr.errors.BaseZarrError) as err:
            raise StoreError(f"{self.url} is damaged ({first_line(err)}); delete the store and dump again") from None
        self._check_run()
        self._raw_roots = {site: self._raw_chunk_root(site) for site in self.sites}
        self._complete: set[tuple[int, int]] = set()
        self._verified: set[tuple[str, int, int, int, int, int]] = set()  # chunks whose checksum matched
        self._sums_of: dict[tuple[str, int, int], np.ndarray] = {}  # (site, model, format) -> its checksums

    def _check_run(self) -> None:
        """Opened through a run folder: the store must be the one that run dumped (its done marker
        records the store's fingerprint), not another run's copied in."""
        if not is_local(self.url):
            return
        run = local_path(self.url).parent
        step = (
            "dump"
            if local_path(self.url).name == STORE_NAME
            else "dump-trajectory"
            if local_path(self.url).name == TRAJECTORY_NAME
            else None
        )
        if step is None or not (run / "spec.json").is_file():
            return
        marker = run / "done" / f"{step}.json"
        try:
            recorded = json.loads(read_regular(marker, RECORD)).get("fingerprint")
        except Unreadable as err:
            if err.missing:
                return  # not dumped (yet)
            raise StoreError(
                f"{marker} {err.why}; delete it, and `factrecall-jobs dump {run.name}` checks the store again"
            ) from None
        except (ValueError, AttributeError):
            return  # damaged, or a marker from before markers held the fingerprint: the run's resume says so
        if recorded is not None and recorded != self.meta.get("fingerprint"):
            raise StoreError(
                f"{self.url} is not the store run {run.name} dumped (its fingerprint is "
                f"{self.meta.get('fingerprint')}, the run's {recorded}: another run's?); delete it and "
                f"`factrecall-jobs dump {run.name}`"
            )

    def __repr__(self) -> str:
        done = self.written()
        return (
            f"ActivationStore({self.url!r}: models {list(self.models)}, {self.layers} layers x "
            f"{len(self.people)} people x {self.hidden} hidden, {self.dtype}, "
            f"{int(done.sum())}/{done.size} blocks written)"
        )

    # -- completeness --------------------------------------------------------------------------
    def written(self) -> np.ndarray:
        """bool (model, format, person_block): which blocks are completely written."""
        return self.read_array("written", ...)

    def read_array(self, name: str, selection: Any) -> np.ndarray:
        """group[name][selection], a chunk that cannot be read (damaged, missing, a folder) as one line."""
        try:
            return np.asarray(self.group[name][selection])
        except (ValueError, RuntimeError, OSError, KeyError, zarr.errors.BaseZarrError) as err:
            raise StoreError(
                f"{self.url} is damaged: its {name!r} array cannot be read ({first_line(err)}); delete "
                "the store and dump again"
            ) from None

    def _flags(self, m: int, f: int) -> np.ndarray:
        """The (model, format)'s block flags. A flag, once set, stays set, so a complete pair is
        remembered and never read again; an incomplete one is re-read (a dump may be finishing it)."""
        if (m, f) not in self._complete:
            flags = self.written()[m, f]
            if not flags.all():
                return flags
            self._complete.add((m, f))
        return np.ones(1, dtype=bool)

    def complete(self, model: str | None = None) -> bool:
        done = self.written()
        return bool(done.all() if model is None else done[self._index("model", model)].all())

    def dumped_models(self) -> list[str]:
        """Models whose every vector is written."""
        done = self.written()
        return [m for i, m in enumerate(self.models) if done[i].all()]

    # -- reading -------------------------------------------------------------------------------
    def _index(self, what: str, value: Any) -> int:
        options = {"model": self.models, "format": self.formats, "attribute": self.attributes}[what]
        if value not in options:
            raise StoreError(f"unknown {what} {value!r}: this store has {', '.join(options)}")
        return options.index(value)

    def _people(self, split: str | None) -> np.ndarray | None:
        if split is None:
            return None
        if split not in SPLITS:
            raise StoreError(f"unknown split {split!r}: use {' or '.join(SPLITS)}")
        return np.flatnonzero(self.split == split)

    def site(self, site: str | None = None) -> str:
        """The full name of a site this store holds: `site` (`hook@position`, or a hook alone for its
        last-token site), or where None the store's one site, else resid_mid@last."""
        if site is None:
            if len(self.sites) == 1 or DEFAULT_SITE in self.sites:
                return self.sites[0] if len(self.sites) == 1 else DEFAULT_SITE
            raise StoreError(f"say which site: this store has {', '.join(self.sites)} (site=...)")
        try:
            full = parse_site(site)
        except ValueError as err:
            raise StoreError(str(err)) from None
        if full not in self.sites:
            raise StoreError(
                f"this store has no site {full}: it has {', '.join(self.sites)}; "
                f"`factrecall-jobs dump RUN --sites {full} --out OTHER.zarr` dumps it"
            )
        return full

    def acts(
        self,
        fmt: str,
        layer: int,
        attribute: str,
        *,
        model: str | None = None,
        split: str | None = None,
        site: str | None = None,
    ) -> np.ndarray:
        """(people, hidden) vectors of one format, layer and attribute at one site (default: the
        store's one, or resid_mid@last), in the store's dtype; people in the order of `.people` (or of
        `labels(attribute, split)` when `split` is given)."""
        site = self.site(site)
        m = self._index("model", self._model(model))
        f = self._index("format", fmt)
        a = self._index("attribute", attribute)
        if not isinstance(layer, (int, np.integer)) or not -self.layers <= layer < self.layers:
            raise StoreError(f"layer {layer!r} does not exist: this store has layers 0..{self.layers - 1}")
        layer = int(layer) % self.layers
        flags = self._flags(m, f)
        if not flags.all():
            raise StoreError(
                f"model {self.models[m]} format {fmt} is not completely dumped yet "
                f"({int(flags.sum())} of {flags.size} blocks); run `factrecall-jobs dump RUN` to finish it"
            )
        out = self._read_raw(site, m, f, layer, a) if self._raw_roots[site] is not None else None
        if out is None:
            out = self._read((m, f, layer, a), site)
        self._verify(site, m, f, layer, a, out)
        rows = self._people(split)
        return out if rows is None else out[rows]

    def _read(self, selection: tuple, site: str) -> np.ndarray:
        """A site's array[selection] through zarr, a damaged or missing chunk reported as one line. (A
        dump never writes NaN, so NaN in a flagged block is a chunk that is not there: zarr reads a
        missing chunk as its fill value.)"""
        try:
            out = np.asarray(self.arrays[site][selection])
        except (ValueError, RuntimeError, OSError) as err:
            raise StoreError(
                f"cannot read {array_name(site)} from {self.url}: a chunk is damaged ({first_line(err)}); "
                "delete the store and dump again"
            ) from None
        if np.isnan(out).any():
            raise StoreError(
                f"cannot read {array_name(site)} from {self.url}: a chunk of a block marked written is "
                "missing; the store is damaged; delete the store and dump again"
            )
        return out

    def read_block(self, model: int, fmt: int, block: int, site: str | None = None) -> np.ndarray:
        """(layer, attribute, people of the block, hidden): one whole dump unit of a site, as zarr stores it."""
        site = self.site(site)
        rows = slice(block * self.block, min((block + 1) * self.block, len(self.people)))
        out = self._read((model, fmt, slice(None), slice(None), rows, slice(None)), site)
        for layer in range(self.layers):
            for a in range(len(self.attributes)):
                self._verify_chunk(site, model, fmt, layer, a, block, out[layer, a])
        return out

    def _verify(self, site: str, m: int, f: int, layer: int, a: int, out: np.ndarray) -> None:
        """Check every chunk of a (people, hidden) slice against its recorded checksum (once per chunk
        per opened store): a chunk of another layer, model, site or store is refused, never returned."""
        for b in range(-(-len(self.people) // self.block)):
            self._verify_chunk(site, m, f, layer, a, b, out[b * self.block : (b + 1) * self.block])

    def _verify_chunk(self, site: str, m: int, f: int, layer: int, a: int, b: int, vectors: np.ndarray) -> None:
        if (site, m, f, layer, a, b) in self._verified:
            return
        try:
            if (site, m, f) not in self._sums_of:  # read once a (model, format) is complete: written, it never changes
                self._sums_of[(site, m, f)] = np.asarray(self._sums[site][m, f])
            expected = int(self._sums_of[(site, m, f)][layer, a, b])
        except (ValueError, RuntimeError, OSError, zarr.errors.BaseZarrError) as err:
            raise StoreError(
                f"{self.url}'s checksums cannot be read ({first_line(err)}); delete the store and dump again"
            ) from None
        found = chunk_crc(self.models[m], self.formats[f], layer, self.attributes[a], b, vectors, site)
        if found != expected:
            raise StoreError(
                f"{self.url}: the {array_name(site)} chunk of model {self.models[m]}, format {self.formats[f]}, "
                f"layer {layer}, attribute {self.attributes[a]}, block {b} is not the one the dump wrote "
                "(moved from another layer, model, site or store, or damaged); delete the store and dump again"
            )
        self._verified.add((site, m, f, layer, a, b))

    def _model(self, model: str | None) -> str:
        if model is not None:
            return model
        dumped = self.dumped_models()
        if len(dumped) == 1:
            return dumped[0]
        raise StoreError(f"say which model: this store has {', '.join(self.models)} (model=...)")

    def labels(self, attribute: str, split: str | None = None):
        """A pandas DataFrame, one row per person (the rows of `acts`): person, split, label (the
        first token's id), label_text, answer."""
        import pandas as pd  # on first use: `store.open` stays quick to import for the CLI and the app

        a = self._index("attribute", attribute)
        table = pd.DataFrame(
            {  # as read and checked at open
                "person": self.people,
                "split": self.split,
                "label": self._coords.label[a],
                "label_text": self._coords.label_text[a],
                "answer": self._coords.answer[a],
            }
        )
        rows = self._people(split)
        return table if rows is None else table.iloc[rows].reset_index(drop=True)

    def to_xarray(self):
        """The whole store as a lazily loaded, labelled `xarray.Dataset` (what `xarray.open_zarr`
        gives with no project code)."""
        import xarray as xr  # on first use, as pandas above

        return xr.open_zarr(self.url, consolidated=True, zarr_format=3)

    # -- the fast local read -------------------------------------------------------------------
    def _raw_chunk_root(self, site: str) -> Path | None:
        """Where chunk files can be read straight into the output array: a local store whose vectors
        are raw little-endian bytes (no compressor or filter). Zarr's own read of a slice this size
        costs several times a file read (its event loop, a bytes copy, a NaN-filled output); this
        path reads each chunk file once, into place. Anything else goes through zarr."""
        array = self.arrays[site]
        meta = array.metadata
        codecs = getattr(meta, "codecs", ())
        local = getattr(self.group.store, "_store", self.group.store)  # under the CheckedStore
        if not (
            isinstance(local, LocalStore)
            and len(codecs) == 1
            and isinstance(codecs[0], BytesCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == sys.byteorder)
        ):
            return None
        return Path(local.root) / array.path

    def _read_raw(self, site: str, m: int, f: int, layer: int, a: int) -> np.ndarray:
        n, block = len(self.people), self.block
        out = np.empty((n, self.hidden), dtype=self.dtype)
        for b in range(-(-n // block)):
            rows = out[b * block : min((b + 1) * block, n)]
            key = self.arrays[site].metadata.encode_chunk_key((m, f, layer, a, b, 0))
            path = self._raw_roots[site] / key
            expected = block * self.hidden * self.dtype.itemsize
            try:
                # Opened without blocking, and only a regular file read: the walk at open refused
                # special files, but one may have been put there since (a FIFO would block forever).
                with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)), "rb") as fh:
                    kind = os.fstat(fh.fileno()).st_mode
                    if not stat.S_ISREG(kind):
                        raise StoreError(
                            f"chunk {path} is not a regular file: the store is damaged; delete the store and dump again"
                        )
                    size = fh.seek(0, 2)
                    fh.seek(0)
                    if size != expected:
                        raise StoreError(
                            f"chunk {path} has {size} bytes, expected {expected}: the store is "
                            "damaged; delete the store and dump again"
                        )
                    fh.readinto(rows.reshape(-1).view(np.uint8))
            except FileNotFoundError:
                raise StoreError(
                    f"chunk {path} is missing though its block is marked written: the store is "
                    "damaged; delete the store and dump again"
                ) from None
            except OSError as err:  # a folder where the chunk should be, unreadable, ...
                raise StoreError(
                    f"chunk {path} cannot be read ({err.strerror}): the store is damaged; delete the "
                    "store and dump again"
                ) from None
        return out


def open_store(path: str | Path) -> ActivationStore:
    """Open an activation store: a run folder, an `activations.zarr` folder, or an fsspec URL."""
    return ActivationStore(path)
