"""Writing an activation store (its layout: `store.layout`): the skeleton, then the vectors.

Crash safety: the skeleton (every array, coordinate and label, then the attributes) is made in a
`.partial` folder and renamed into place, so a store either exists whole or not at all. Vectors are
written one (model, format, person block) at a time, every chunk of it, and only then the block's
`written` flag; Zarr's local store writes each chunk file to a temporary name and renames it. A
reader therefore never takes a half-written block for a complete one, and a killed dump redoes
exactly the blocks whose flag is not set. A block's checksums are written after its chunks and before
its flag; a reader checks each chunk against its checksum, so a chunk moved from another layer, model
or store is refused. A store without checksums (dumped before they existed) is refused: dump it again.

A dump that finds a store resumes it only where it holds the same layout (`Layout.fingerprint`);
anything else at that location is refused, never overwritten.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from store import validate
from store.errors import StoreError
from store.layout import Layout, chunk_crc, open_group
from store.names import (
    ATTRS_KEY,
    CHECKSUM_DIMS,
    DEFAULT_SITE,
    DIMS,
    HALF_MADE,
    SCHEMA,
    VERSION,
    array_name,
    checksum_name,
)
from store.validate import is_local, local_path

# What each hook and position is, in a store's attributes (the definitions: docs/sites.md, and the
# per-family reading of each hook: jobs/run/sites.py).
HOOK_DOCS = {
    "resid_pre": "the residual stream entering the block (the block's input)",
    "resid_mid": (
        "h = residual stream + self-attention output, before the MLP (TransformerLens's resid_mid): "
        "the input of the post-attention norm in a Llama or GPT-2 block; layer input + attention output "
        "in a GPT-NeoX block"
    ),
    "resid_post": "the residual stream leaving the block (the block's output)",
    "attn_out": "the self-attention's output, as the block adds it to the residual stream",
    "mlp_out": "the MLP's output, as the block adds it to the residual stream",
}
POSITION_DOCS = {
    "last": "the last prompt token, whose next token is the attribute's first token",
    "subject_last": (
        "the last token of the subject mention the relation words are about: the full name in "
        "bio_short and qa, the name or the pronoun opening the last sentence in bio_long"
    ),
    "name_last": "the last token of the last occurrence of the person's full name in the prompt",
}


def _strings(values: Sequence[str] | np.ndarray) -> np.ndarray:
    return np.asarray([str(v) for v in np.asarray(values).ravel()], dtype=str).reshape(np.shape(values))


def _create_skeleton(group: zarr.Group, layout: Layout, meta: dict[str, Any]) -> None:
    """Every array and label, then the attributes that make the group a store (last: a skeleton a
    kill interrupted is recognisably ours and unfinished, `HALF_MADE`)."""
    group.attrs[HALF_MADE] = True

    def coord(name: str, values: np.ndarray, dims: tuple[str, ...], description: str) -> None:
        arr = group.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype if values.dtype.kind != "U" else str,
            dimension_names=dims,
            chunks=values.shape or None,
        )
        arr[...] = values
        arr.attrs["description"] = description

    coord("model", _strings(layout.models), ("model",), "the trained model (a run's checkpoint) the vectors come from")
    coord(
        "format", _strings(layout.formats), ("format",), "prompt format: bio_long (s, r'), bio_short (s, r), qa (r, s)"
    )
    coord("layer", np.arange(layout.layers, dtype=np.int32), ("layer",), "transformer block, 0 = first")
    coord("attribute", _strings(layout.attributes), ("attribute",), "the attribute asked about, in BIO order")
    coord(
        "attribute_index",
        np.arange(len(layout.attributes), dtype=np.int32),
        ("attribute",),
        "the attribute's position in the BIO entry",
    )
    coord(
        "person", np.asarray(layout.people, dtype=np.int64), ("person",), "person index in the run's data/people.jsonl"
    )
    coord(
        "split", _strings(layout.split), ("person",), "qa_in: the person's QA pairs were trained on; qa_out: held out"
    )
    coord(
        "label",
        np.asarray(layout.label, dtype=np.int32),
        ("attribute", "person"),
        "token id of the attribute's first answer token (the probe's class)",
    )
    coord("label_text", _strings(layout.label_text), ("attribute", "person"), "that token as text")
    coord("answer", _strings(layout.answer), ("attribute", "person"), "the whole answer")

    shape = (
        len(layout.models),
        len(layout.formats),
        layout.layers,
        len(layout.attributes),
        len(layout.people),
        layout.hidden,
    )
    for site in layout.sites:
        hook, _, position = site.partition("@")
        vectors = group.create_array(
            array_name(site),
            shape=shape,
            dtype=layout.dtype,
            chunks=(1, 1, 1, 1, layout.block, layout.hidden),
            compressors=ZstdCodec(level=1) if layout.compressor == "zstd" else None,
            fill_value=np.nan,
            dimension_names=DIMS,
        )
        # CF's `coordinates` makes xarray carry the labels along with any selection of the vectors.
        vectors.attrs.update(
            {
                "description": HOOK_DOCS[hook],
                "position": POSITION_DOCS[position],
                "site": site,
                "transformer_lens": f"blocks.{{layer}}.hook_{hook}",
                "unwritten": "NaN",
                "coordinates": "attribute_index split label label_text answer",
            }
        )
        sums = group.create_array(
            checksum_name(site),
            shape=(len(layout.models), len(layout.formats), layout.layers, len(layout.attributes), layout.blocks),
            dtype="uint32",
            fill_value=0,
            dimension_names=CHECKSUM_DIMS,
        )
        sums.attrs["description"] = (
            f"CRC-32 of each {array_name(site)} chunk's bytes, seeded with its model, format, layer, "
            "attribute and block (`store.layout.chunk_crc`): a chunk moved, swapped or "
            "damaged does not match"
        )
    written = group.create_array(
        "written",
        shape=(len(layout.models), len(layout.formats), layout.blocks),
        dtype=bool,
        fill_value=False,
        dimension_names=("model", "format", "person_block"),
    )
    written.attrs["description"] = (
        f"True once every vector of a (model, format, block of {layout.block} people) "
        "is written; a block whose flag is False may be partly written"
    )
    group.attrs.put(
        {
            ATTRS_KEY: {
                "schema": SCHEMA,
                "version": VERSION,
                # the first site's (before sites, the one): the others' are on their arrays
                "hook": layout.sites[0].partition("@")[0],
                "hook_doc": HOOK_DOCS[layout.sites[0].partition("@")[0]],
                "position": POSITION_DOCS[layout.sites[0].partition("@")[2]],
                "models": list(layout.models),
                "formats": list(layout.formats),
                "attributes": list(layout.attributes),
                "layers": layout.layers,
                "hidden": layout.hidden,
                "dtype": layout.dtype,
                "compressor": layout.compressor,
                "chunk_people": layout.block,
                "source": layout.source,
                "sites": list(layout.sites),
                "fingerprint": layout.fingerprint(),
                **meta,
            }
        }
    )


def consolidate(url: str | Path) -> None:
    """Consolidated metadata lets xarray open the store without probing every array. (Zarr warns
    that it is not yet in the v3 spec; zarr and xarray both read it.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(url))


class Writer:
    """Writes vectors into a store, one (model, format, person block) at a time."""

    def __init__(self, group: zarr.Group, layout: Layout):
        self.group, self.layout = group, layout
        self.arrays = {site: group[array_name(site)] for site in layout.sites}
        self._written = group["written"]
        self.flags = np.asarray(self._written[...])
        # open_group refuses a store without checksums
        self._sums = {site: group[checksum_name(site)] for site in layout.sites}
        self.sums = {site: np.asarray(arr[...]) for site, arr in self._sums.items()}

    @classmethod
    def open_or_create(cls, url: str | Path, layout: Layout, meta: dict[str, Any]) -> Writer:
        """Resume the store at `url` if it holds this layout, else create it. A store of another
        layout is refused (never overwritten)."""
        exists = _exists(url)
        attrs = _group_attrs(url) if exists else None
        # A remote skeleton a kill interrupted (our marker, not yet our attributes) is made anew.
        half_made = not is_local(url) and attrs is not None and HALF_MADE in attrs and ATTRS_KEY not in attrs
        if exists and not half_made:
            if attrs is None:
                raise StoreError(
                    f"{url} already holds data that is not a factrecall store; choose an empty location "
                    "for --out (or delete what is there)"
                )
            group = open_group(url)  # refuses foreign, newer and truncated stores
            found = group.attrs[ATTRS_KEY].get("fingerprint")
            if found != layout.fingerprint():
                raise StoreError(
                    f"the store at {url} was dumped with other settings or data "
                    f"({_difference(group.attrs[ATTRS_KEY], layout)}); "
                    "delete it to dump again, or write elsewhere with --out"
                )
            if is_local(url):  # zarr's temporary files of chunk writes a kill interrupted
                for leftover in local_path(url).rglob("*.partial"):
                    leftover.unlink(missing_ok=True)
            return cls(group, layout)
        if is_local(url):
            final = local_path(url)
            partial = final.with_name(final.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            group = zarr.open_group(str(partial), mode="w")
            _create_skeleton(group, layout, meta)
            consolidate(partial)
            partial.rename(final)
            return cls(zarr.open_group(str(final), mode="r+"), layout)
        # Remote: no rename, so the skeleton is made in place. Only an empty location or a skeleton
        # of ours that a kill left unfinished is written; anything else there is the user's.
        group = zarr.open_group(str(url), mode="w")
        _create_skeleton(group, layout, meta)
        consolidate(url)
        return cls(zarr.open_group(str(url), mode="r+"), layout)

    def done(self, model: str, fmt: str, block: int) -> bool:
        return bool(self.flags[self.layout.models.index(model), self.layout.formats.index(fmt), block])

    def people(self, block: int) -> slice:
        return slice(block * self.layout.block, min((block + 1) * self.layout.block, len(self.layout.people)))

    def size(self, block: int) -> int:
        """People in `block` (the last may hold fewer)."""
        return self.people(block).stop - self.people(block).start

    def write(self, model: str, fmt: str, block: int, vectors: np.ndarray | dict[str, np.ndarray]) -> None:
        """vectors: (layer, attribute, people of the block, hidden) in the store's dtype, for each of
        the store's sites (a mapping site -> vectors; a store of one site takes the array alone). Every
        site's chunks first, then their checksums, then the block's flag."""
        if not isinstance(vectors, dict):
            if len(self.layout.sites) != 1:
                raise ValueError(f"this store holds {len(self.layout.sites)} sites: give a mapping site -> vectors")
            vectors = {self.layout.sites[0]: vectors}
        if set(vectors) != set(self.layout.sites):
            raise ValueError(f"block has sites {sorted(vectors)}, expected {list(self.layout.sites)}")
        m, f = self.layout.models.index(model), self.layout.formats.index(fmt)
        expected = (self.layout.layers, len(self.layout.attributes), self.size(block), self.layout.hidden)
        for site in self.layout.sites:
            if vectors[site].shape != expected:
                raise ValueError(f"block of {site} has shape {vectors[site].shape}, expected {expected}")
        for site in self.layout.sites:
            block_vectors = vectors[site].astype(self.layout.dtype, copy=False)
            self.arrays[site][m, f, :, :, self.people(block), :] = block_vectors
            sums = self.sums[site]
            for layer in range(self.layout.layers):
                for a, attribute in enumerate(self.layout.attributes):
                    sums[m, f, layer, a, block] = chunk_crc(
                        model, fmt, layer, attribute, block, block_vectors[layer, a], site
                    )
        for site in self.layout.sites:
            self._sums[site][...] = self.sums[site]
        self.flags[m, f, block] = True
        self._written[...] = self.flags

    def complete(self, model: str | None = None) -> bool:
        if model is None:
            return bool(self.flags.all())
        return bool(self.flags[self.layout.models.index(model)].all())


def _group_attrs(url: str | Path) -> dict[str, Any] | None:
    """The attributes of the Zarr v3 group at `url`; None where there is none (or its zarr.json is
    not one: a FIFO, a device, too large, not JSON). Read as plain JSON, never by zarr: the dump asks
    before it opens anything."""
    try:
        root = validate.read_json(url, "zarr.json")
    except StoreError:
        return None
    if root is None or root.get("zarr_format") != 3 or root.get("node_type") != "group":
        return None
    attrs = root.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def existing_settings(url: str | Path) -> dict[str, Any]:
    """dtype, compressor and chunk_people of the factrecall store at `url`; {} if there is none
    (or it cannot be read: opening it for the dump then says why)."""
    meta = (_group_attrs(url) or {}).get(ATTRS_KEY)
    if not isinstance(meta, dict):
        return {}
    return {k: meta[k] for k in ("dtype", "compressor", "chunk_people", "sites") if k in meta}


def _exists(url: str | Path) -> bool:
    """Anything at all at `url`: a store, another Zarr group, or someone's files."""
    if is_local(url):
        return local_path(url).exists()
    import fsspec  # remote stores only

    fs, path = fsspec.core.url_to_fs(str(url))
    return bool(fs.exists(path))


def _difference(found: dict[str, Any], layout: Layout) -> str:
    wanted = {
        "models": list(layout.models),
        "formats": list(layout.formats),
        "attributes": list(layout.attributes),
        "layers": layout.layers,
        "hidden": layout.hidden,
        "dtype": layout.dtype,
        "compressor": layout.compressor,
        "chunk_people": layout.block,
        "sites": list(layout.sites),
    }
    found = {"sites": [DEFAULT_SITE], **found}  # a store made before sites holds resid_mid@last alone
    for key, value in wanted.items():
        if found.get(key) != value:
            return f"{key} {found.get(key)!r}, not {value!r}"
    for key, value in (layout.source or {}).items():
        if (found.get("source") or {}).get(key) != value:
            return f"another {key}"
    return "different people or labels"
