"""Step 3 of checking a store (`store.validate`), for its arrays: every array the writer makes, its
zarr.json read as plain JSON and checked against the schema before zarr sees it: its shape (from the
attributes and the number of people), chunk shape, data type, fill value and codecs, each from an
allowlist of what the writer writes; and the same of the root's consolidated metadata. What follows
from each is its `ChunkLimit`, which `store.chunks.CheckedStore` holds every chunk read to.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from store.chunks import ChunkLimit
from store.errors import StoreError
from store.names import CHECKSUM_DIMS, DIMS, array_name, checksum_name
from store.validate import (
    MAX_COORD_CHUNKS,
    MAX_PEOPLE,
    MAX_STRING_BYTES,
    MAX_STRING_CHUNK,
    Attributes,
    bounds_problem,
    check_attributes,
    damaged,
    is_int,
    read_json,
)

# Each array the writer makes besides the sites': its dimensions and data type.
COORDINATES = {
    "written": (("model", "format", "person_block"), "bool"),
    "model": (("model",), "string"),
    "format": (("format",), "string"),
    "layer": (("layer",), "int32"),
    "attribute": (("attribute",), "string"),
    "attribute_index": (("attribute",), "int32"),
    "person": (("person",), "int64"),
    "split": (("person",), "string"),
    "label": (("attribute", "person"), "int32"),
    "label_text": (("attribute", "person"), "string"),
    "answer": (("attribute", "person"), "string"),
}


def schema(sites: tuple[str, ...]) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """Every array of a store of these sites: each site's vectors (in the attributes' dtype: None)
    and their checksums, then the rest."""
    out: dict[str, tuple[tuple[str, ...], str | None]] = {}
    for site in sites:
        out[array_name(site)] = (DIMS, None)
        out[checksum_name(site)] = (CHECKSUM_DIMS, "uint32")
    return out | COORDINATES


# The fill value the writer gives each data type, as zarr.json spells it (an allowlist of one: a
# crafted one reaches numpy's casts, and resid_mid's NaN is how a missing chunk is told from a written one).
FILL = {"float16": "NaN", "float32": "NaN", "bool": False, "uint32": 0, "int32": 0, "int64": 0, "string": ""}
KEYS = {
    "zarr_format",
    "node_type",
    "shape",
    "data_type",
    "chunk_grid",
    "chunk_key_encoding",
    "fill_value",
    "codecs",
    "dimension_names",
    "storage_transformers",
    "attributes",
}
KEY_ENCODING = {"name": "default", "configuration": {"separator": "/"}}


def _codecs_ok(codecs: Any, dtype: str, zstd: bool | None) -> bool:
    """The codec chains a dump writes: raw little-endian bytes (or vlen-utf8 for strings), then
    optionally zstd (for resid_mid exactly when the attributes say so)."""
    if not isinstance(codecs, list) or not 1 <= len(codecs) <= 2 or not all(isinstance(c, dict) for c in codecs):
        return False
    first, rest = codecs[0], codecs[1:]
    if dtype == "string":
        if (
            first.get("name") != "vlen-utf8"
            or first.get("configuration", {}) != {}
            or set(first) - {"name", "configuration"}
        ):
            return False
    elif (
        first.get("name") != "bytes"
        or set(first) - {"name", "configuration"}
        or first.get("configuration", {}) not in ({}, {"endian": "little"}, {"endian": "big"})
    ):
        return False
    if rest:
        config = rest[0].get("configuration")
        if not (
            rest[0].get("name") == "zstd"
            and set(rest[0]) <= {"name", "configuration"}
            and isinstance(config, dict)
            and set(config) == {"level", "checksum"}
            and is_int(config["level"])
            and -131072 <= config["level"] <= 22
            and isinstance(config["checksum"], bool)
        ):
            return False
    return zstd is None or bool(rest) == zstd


def _codec_names(codecs: Any) -> str:
    if isinstance(codecs, list):
        return ", ".join(repr(c.get("name")) if isinstance(c, dict) else repr(c) for c in codecs)[:120]
    return repr(codecs)[:120]


def check_array(
    url: str | Path,
    name: str,
    meta: dict,
    dims: tuple[str, ...],
    shape: tuple[int, ...],
    dtype: str,
    chunks: tuple[int, ...] | None,
    zstd: bool | None,
) -> ChunkLimit:
    """One array's zarr.json against the schema: `shape`, `dtype`, and `chunks` where the schema
    fixes them (resid_mid's); returns what one of its chunks may be."""

    def bad(what: str) -> StoreError:
        return damaged(url, f"its {name} array {what}")

    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise bad("is not a Zarr v3 array")
    extra = sorted(set(meta) - KEYS)
    if extra:
        raise bad(f"has metadata {extra[0]!r}, which a dump never writes")
    found = meta.get("shape")
    if found != list(shape) or not all(is_int(n) for n in found):
        raise bad(f"has shape {str(found)[:80]}, not {list(shape)} as its attributes and person array say")
    if meta.get("data_type") != dtype:
        raise bad(f"has data type {str(meta.get('data_type'))[:40]!r}, not {dtype!r}")
    grid = meta.get("chunk_grid")
    chunk = (
        grid.get("configuration", {}).get("chunk_shape")
        if isinstance(grid, dict)
        and grid.get("name") == "regular"
        and isinstance(grid.get("configuration"), dict)
        and set(grid) == {"name", "configuration"}
        else None
    )
    if not (isinstance(chunk, list) and len(chunk) == len(shape) and all(is_int(c) and c >= 1 for c in chunk)):
        raise bad(f"has chunk grid {str(grid)[:80]}: its chunk shape must be {len(shape)} positive whole numbers")
    if chunks is not None and chunk != list(chunks):
        raise bad(f"has chunk shape {chunk}, not {list(chunks)} as its attributes say")
    if chunks is None:
        if any(c > max(n, 1) for c, n in zip(chunk, shape)):
            raise bad(f"has chunk shape {chunk}, larger than its shape {list(shape)}")
        if math.prod(-(-n // c) for c, n in zip(chunk, shape)) > MAX_COORD_CHUNKS:
            raise bad(f"has chunk shape {chunk}: more than {MAX_COORD_CHUNKS:,} chunks")
    if meta.get("chunk_key_encoding") != KEY_ENCODING:
        raise bad(f"has chunk key encoding {str(meta.get('chunk_key_encoding'))[:80]}, not {KEY_ENCODING}")
    fill, want = meta.get("fill_value"), FILL[dtype]
    if type(fill) is not type(want) or fill != want:
        raise bad(f"has fill value {str(fill)[:40]!r}, not {want!r}")
    if not _codecs_ok(meta.get("codecs"), dtype, zstd):
        raise bad(
            f"has codecs {_codec_names(meta.get('codecs'))}, not the ones a dump writes (bytes, then zstd"
            f"{'; vlen-utf8 for strings' if dtype == 'string' else ''}"
            f"{'; zstd as its attributes say' if zstd is not None else ''})"
        )
    if meta.get("dimension_names") != list(dims):
        raise bad(f"has dimensions {str(meta.get('dimension_names'))[:80]}, not {list(dims)}")
    if meta.get("storage_transformers", []) != []:
        raise bad("has storage transformers, which a dump never writes")
    if not isinstance(meta.get("attributes", {}), dict):
        raise bad("has attributes that are not a mapping")
    elements = math.prod(chunk)
    compressed = len(meta["codecs"]) == 2
    if dtype == "string":
        decoded, exact = min(4 + elements * (4 + MAX_STRING_BYTES), MAX_STRING_CHUNK), False
    else:
        decoded, exact = elements * np.dtype(dtype).itemsize, True
    # zstd's worst case (incompressible data) is a little more than its input: ZSTD_compressBound.
    stored = decoded + decoded // 128 + 1024 if compressed else decoded
    return ChunkLimit(stored, decoded, exact, compressed, elements if dtype == "string" else None)


def check_arrays(url: str | Path, meta: dict) -> tuple[Attributes, int, dict[str, ChunkLimit]]:
    """Every array of the schema, its zarr.json read here and checked before zarr sees it: the
    attributes, the number of people (the person array's length, which the others must agree with)
    and each array's chunk limits."""
    attrs = check_attributes(url, meta)
    arrays = schema(attrs.sites)
    checksums = {checksum_name(site) for site in attrs.sites}
    metas = {}
    for name in arrays:
        found = read_json(url, f"{name}/zarr.json")
        if found is None:
            if name in checksums:
                raise StoreError(
                    f"{url} has no {name} array, so its chunks cannot be checked; delete it and "
                    "`factrecall-jobs dump RUN` to dump it again"
                )
            raise StoreError(f"{url} is truncated: array {name!r} is missing; delete the store and dump again")
        metas[name] = found
    shape = metas["person"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and is_int(shape[0]) and 1 <= shape[0] <= MAX_PEOPLE):
        raise damaged(
            url,
            f"its person array has shape {str(shape)[:80]}: more than {MAX_PEOPLE:,} people, or not a count of people",
        )
    people = shape[0]
    if attrs.block > people:
        raise damaged(url, f"its attribute chunk_people is {attrs.block:,}, more than its {people:,} people")
    problem = bounds_problem(
        len(attrs.models),
        len(attrs.formats),
        len(attrs.attributes),
        attrs.layers,
        attrs.hidden,
        people,
        attrs.block,
        np.dtype(attrs.dtype).itemsize,
    )
    if problem:
        raise damaged(url, f"it declares {problem}")
    sizes = {
        "model": len(attrs.models),
        "format": len(attrs.formats),
        "layer": attrs.layers,
        "attribute": len(attrs.attributes),
        "person": people,
        "hidden": attrs.hidden,
        "person_block": -(-people // attrs.block),
    }
    limits = {}
    for name, (dims, dtype) in arrays.items():
        hook = dtype is None
        limits[name] = check_array(
            url,
            name,
            metas[name],
            dims,
            tuple(sizes[d] for d in dims),
            dtype or attrs.dtype,
            (1, 1, 1, 1, attrs.block, attrs.hidden) if hook else None,
            attrs.compressor == "zstd" if hook else None,
        )
    return attrs, people, limits


def check_consolidated(url: str | Path, root: dict, attrs: Attributes, people: int) -> None:
    """The root's consolidated metadata (what xarray reads instead of each zarr.json) holds the same
    checks where it lists a schema array."""
    listed = root.get("consolidated_metadata")
    if listed is None:
        return
    entries = listed.get("metadata") if isinstance(listed, dict) else None
    if not isinstance(entries, dict):
        raise damaged(url, "its consolidated metadata is not a mapping")
    sizes = {
        "model": len(attrs.models),
        "format": len(attrs.formats),
        "layer": attrs.layers,
        "attribute": len(attrs.attributes),
        "person": people,
        "hidden": attrs.hidden,
        "person_block": -(-people // attrs.block),
    }
    for name, (dims, dtype) in schema(attrs.sites).items():
        if name in entries:
            if not isinstance(entries[name], dict):
                raise damaged(url, f"its consolidated metadata of {name} is not a mapping")
            hook = dtype is None
            check_array(
                url,
                name,
                entries[name],
                dims,
                tuple(sizes[d] for d in dims),
                dtype or attrs.dtype,
                (1, 1, 1, 1, attrs.block, attrs.hidden) if hook else None,
                attrs.compressor == "zstd" if hook else None,
            )
