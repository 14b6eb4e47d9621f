"""The activation store's layout (schema `factrecall.activations`, version 1), and how a store is opened.

A Zarr v3 group, readable with no project code (`zarr.open_group`, `xarray.open_zarr`):

    resid_mid   (model, format, layer, attribute, person, hidden)  float16 (or float32)
                h at the last prompt token: residual stream + self-attention output, before the MLP
    written     (model, format, person_block)                       bool: a block is complete
    checksum    (model, format, layer, attribute, person_block)     uint32: each chunk's CRC-32, seeded with
                                                                    where it belongs (`chunk_crc`)
    model, format, layer, attribute, person                         coordinates
    attribute_index (attribute)  split (person)                     QA in / out of training
    label (attribute, person) int32, label_text, answer             the attribute's first token, its text, the answer

`resid_mid` has one chunk per (model, format, layer, attribute, person block), so the probe's read,
one (model, format, layer, attribute) slice over every person, is one contiguous chunk (or a few,
for models whose chunk would exceed CHUNK_BYTES). Unwritten vectors read as NaN.

Writing a store (whole or not at all, then a block of people at a time, each block's checksums and
then its `written` flag) is `store.writer`.

Before anything of a store is read, `open_group` checks its files and metadata against this schema
(store.validate): a damaged or crafted store is one line, never a traceback, a hang or a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from store import arrays, chunks, validate
from store.errors import StoreError, first_line
from store.names import ATTRS_KEY, COMPRESSORS, DEFAULT_SITE, DTYPES, HALF_MADE, SCHEMA, VERSION, parse_sites
from store.validate import MAX_CHUNK_BYTES, bounds_problem, is_local, local_path

# The most bytes one chunk holds: a model with a large hidden size splits people into blocks so a
# dump holds one block of every layer and attribute in memory at a time, and readers get chunks of
# a size that both zarr and a file system handle well.
CHUNK_BYTES = 4 << 20
assert CHUNK_BYTES <= MAX_CHUNK_BYTES  # what a dump writes by default, every reader takes


@dataclass(frozen=True)
class Layout:
    """Everything that decides the store's shape and contents; two dumps with equal layouts write
    the same store, so a resume must find the same layout."""

    models: tuple[str, ...]
    formats: tuple[str, ...]
    attributes: tuple[str, ...]
    layers: int
    hidden: int
    people: np.ndarray  # int person indices, in store order
    split: np.ndarray  # str per person
    label: np.ndarray  # int (attribute, person): the attribute's first token id
    label_text: np.ndarray  # str (attribute, person)
    answer: np.ndarray  # str (attribute, person)
    dtype: str = "float16"
    compressor: str = "none"
    chunk_people: int | None = None  # None: as many as fit CHUNK_BYTES
    # Where the vectors come from (the run, each model's weights, the compute precision): opaque to
    # the store, part of the fingerprint, so a resume never mixes two sources' vectors.
    source: dict[str, Any] | None = None
    # The sites stored, an array each (store.names.array_name), in this order; every store made before
    # sites holds the default one alone, and reads on as that.
    sites: tuple[str, ...] = (DEFAULT_SITE,)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "sites", parse_sites(self.sites))
        except ValueError as err:
            raise StoreError(str(err)) from None
        if self.dtype not in DTYPES:
            raise StoreError(f"dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.compressor not in COMPRESSORS:
            raise StoreError(f"compressor {self.compressor!r}: choose one of {', '.join(COMPRESSORS)}")
        if self.chunk_people is not None and self.chunk_people < 1:
            raise StoreError(f"chunk_people must be at least 1, not {self.chunk_people}")
        shape = (len(self.attributes), len(self.people))
        for name in ("label", "label_text", "answer"):
            if np.shape(getattr(self, name)) != shape:
                raise StoreError(
                    f"{name} has shape {np.shape(getattr(self, name))}, expected {shape} (attribute, person)"
                )
        # What every reader refuses (store.validate), the writer never writes.
        problem = bounds_problem(
            len(self.models),
            len(self.formats),
            len(self.attributes),
            self.layers,
            self.hidden,
            len(self.people),
            self.block,
            np.dtype(self.dtype).itemsize,
        )
        if problem:
            raise StoreError(
                f"this dump would make a store of {problem}, more than factrecall reads back; dump fewer "
                "models or people, or fewer people per chunk (--chunk-people)"
            )

    @property
    def block(self) -> int:
        """People per chunk."""
        if self.chunk_people is not None:
            return min(self.chunk_people, len(self.people))
        per_person = max(1, self.hidden) * np.dtype(self.dtype).itemsize
        return max(1, min(len(self.people), CHUNK_BYTES // per_person))

    @property
    def blocks(self) -> int:
        return -(-len(self.people) // self.block)

    def fingerprint(self) -> str:
        """A hash of the layout: what a resumed dump must match."""
        h = hashlib.sha256()
        h.update(
            json.dumps(
                [
                    self.models,
                    self.formats,
                    self.attributes,
                    self.layers,
                    self.hidden,
                    self.dtype,
                    self.compressor,
                    self.block,
                    self.source,
                    # only where it is not the default: a store of resid_mid@last keeps the
                    # fingerprint it had before sites existed (and so its cached probes and patches)
                    *([list(self.sites)] if self.sites != (DEFAULT_SITE,) else []),
                ],
                sort_keys=True,
            ).encode()
        )
        for arr in (self.people, self.split, self.label, self.label_text, self.answer):
            h.update(json.dumps(np.asarray(arr).tolist()).encode())
        return h.hexdigest()[:16]


def chunk_crc(
    model: str, fmt: str, layer: int, attribute: str, block: int, vectors: np.ndarray, site: str = DEFAULT_SITE
) -> int:
    """The checksum of one chunk of a site's array: CRC-32 of its bytes (people of the block x hidden,
    in the store's dtype), seeded with where it belongs, so a chunk of another layer, model, site or
    store fails. (resid_mid@last's seed leaves its site out, as before sites existed.)"""
    where = f"{model}/{fmt}/{layer}/{attribute}/{block}"
    seed = zlib.crc32((where if site == DEFAULT_SITE else f"{site}/{where}").encode())
    return zlib.crc32(np.ascontiguousarray(vectors).view(np.uint8), seed)


def open_group(url: str | Path, mode: str = "r+") -> zarr.Group:
    """The store's root group, after checking it is a complete factrecall store this code can read
    (`open_checked`)."""
    return open_checked(url, mode)[0]


def open_checked(url: str | Path, mode: str = "r+") -> tuple[zarr.Group, validate.Coordinates]:
    """The store's root group and its coordinates (`store.validate.Coordinates`), after checking,
    before zarr parses or reads anything of it: its files (a local store: no link, FIFO, device or
    socket), its attributes and every array's metadata against the schema and its bounds, its
    coordinates and labels against the fingerprint it was dumped with. Zarr then reads every chunk
    through a `store.chunks.CheckedStore`, which bounds each chunk before it is decoded. Each problem is one line."""
    if is_local(url):
        path = local_path(url)
        if not path.exists():
            hint = (
                f" (a dump in progress left {path.name}.partial)"
                if path.with_name(path.name + ".partial").exists()
                else ""
            )
            raise StoreError(f"no activation store at {path}{hint}; `factrecall-jobs dump RUN` makes one")
        if not (path / "zarr.json").exists():
            raise StoreError(f"{path} is not a Zarr v3 store (no zarr.json); give a run folder or an activations.zarr")
        validate.check_files(path)
    root = validate.read_json(url, "zarr.json")
    if root is None or root.get("zarr_format") != 3 or root.get("node_type") != "group":
        raise StoreError(
            f"cannot open a Zarr group at {url}: its zarr.json is not a Zarr v3 group's; give a run "
            "folder or an activations.zarr"
        )
    attrs = root.get("attributes", {})
    meta = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
    if meta is None and isinstance(attrs, dict) and HALF_MADE in attrs:
        raise StoreError(f"{url} is a store whose making a kill interrupted; dump again (it is made anew)")
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise StoreError(
            f"{url} is a Zarr group but not a factrecall activation store (no {SCHEMA!r} schema in its attributes)"
        )
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise StoreError(
            f"{url} has store schema version {meta.get('version')}, newer than this factrecall reads "
            f"({VERSION}); upgrade factrecall"
        )
    declared, people, limits = arrays.check_arrays(url, meta)
    arrays.check_consolidated(url, root, declared, people)
    try:
        # Not the consolidated metadata (that is for xarray): it would list an array whose folder is gone.
        store = chunks.CheckedStore(chunks.inner_store(url, read_only=mode == "r"), limits, str(url))
        group = zarr.open_group(store=store, mode=mode, zarr_format=3, use_consolidated=False)
    except validate.READ_ERRORS as err:
        raise StoreError(f"cannot open a Zarr group at {url}: {first_line(err)}") from None
    coords = validate.check_coordinates(url, group, declared, meta)
    # The fingerprint again, from the arrays as read: a split swapped or a label edited does not match.
    found = Layout(
        models=declared.models,
        formats=declared.formats,
        attributes=declared.attributes,
        layers=declared.layers,
        hidden=declared.hidden,
        people=coords.people,
        split=coords.split,
        label=coords.label,
        label_text=coords.label_text,
        answer=coords.answer,
        dtype=declared.dtype,
        compressor=declared.compressor,
        chunk_people=declared.block,
        source=meta.get("source"),
        sites=declared.sites,
    ).fingerprint()
    if found != meta["fingerprint"]:
        raise StoreError(
            f"{url} is damaged (its people, splits, labels or settings are not the ones it was dumped "
            f"with: they hash to {found}, it records {meta['fingerprint']}); delete the store and dump again"
        )
    return group, coords
