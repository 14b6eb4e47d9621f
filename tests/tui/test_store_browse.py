"""The Store pane's data side without Textual (factrecall_tui/store_browse.py): the index a researcher
types, how much of a slice is shown, walking a small real Zarr store (a damaged node included) and a
labelled preview of it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from factrecall_tui.store_browse import (
    MAX_COLS,
    MAX_ROWS,
    BadIndex,
    cap,
    clip,
    default_index,
    index_text,
    parse_index,
    read_preview,
    store_signature,
    walk_store,
)
from store.errors import StoreError

SHAPE, DIMS = (4, 3, 2, 6, 16, 64), ("model", "format", "layer", "attribute", "person", "hidden")


def test_good_indexes_pick_what_numpy_would():
    assert parse_index("0, 0, 1, 3, :8, :6", SHAPE, DIMS) == [0, 0, 1, 3, range(0, 8), range(0, 6)]
    assert parse_index("[-1, 2, 1, 0, ..., ::-20]", SHAPE, DIMS) == [3, 2, 1, 0, range(0, 16), range(63, -1, -20)]
    assert parse_index("1, 2, 1, 5, 3,", SHAPE, DIMS) == [1, 2, 1, 5, 3, range(0, 64)]
    assert parse_index("", (3,)) == [range(0, 3)]
    assert parse_index("", ()) == []
    values = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    picked = parse_index("3, 2, 1, 3, 2:12:3, -4:", SHAPE, DIMS)
    rows, cols = picked[4], picked[5]
    np.testing.assert_array_equal(values[3, 2, 1, 3][np.ix_(list(rows), list(cols))], values[3, 2, 1, 3, 2:12:3, -4:])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("__import__('os')", "is not an integer"),
        ("1e3", "is not an integer"),
        ("0.5", "is not an integer"),
        ("0, 0, 0, 0, 0, 0, 0", "7 entries for an array of 6 dimensions"),
        ("..., ...", "at most one ..."),
        ("1:2:3:4", "is not a slice"),
        ("0, 0, 9", "out of bounds for layer (size 2)"),
        ("0, :, :, :", "give an integer for all but two"),
        ("1:2:0", "step cannot be zero"),
        ("0,,1", "an empty entry between commas"),
    ],
)
def test_bad_indexes_say_why_in_one_line(text, says):
    with pytest.raises(BadIndex) as err:
        parse_index(text, SHAPE, DIMS)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_index_text_reads_back_to_the_same_selection():
    for text in ("0, 0, 1, 3, :8, :6", "3, 2, 1, 0, ::-20, 5", "0, 0, 0, 0, 3:3, :"):
        selection = parse_index(text, SHAPE, DIMS)
        assert parse_index(index_text(selection), SHAPE, DIMS) == selection
    assert index_text([0, range(0, 8), range(63, -1, -20)]) == "0, 0:8, 63:2:-20"


def test_a_large_slice_is_capped_and_says_so():
    selection, note = cap([0, range(0, 1000), range(0, 64)])
    assert selection == [0, range(0, MAX_ROWS), range(0, MAX_COLS)]
    assert note == f"first {MAX_ROWS} of 1000 rows, first {MAX_COLS} of 64 columns"
    assert cap([range(0, 5)]) == ([range(0, 5)], "")
    assert default_index((4, 3, 2, 6, 16, 64)) == "0, 0, 0, 0, :8, :6"
    assert default_index((30,)) == ":20" and default_index(()) == ""


def test_clip_cuts_long_attributes():
    clipped = clip({"rows": list(range(30)), "text": "x" * 1000, "n": 3})
    assert clipped["rows"][-1] == "… 22 more" and len(clipped["rows"]) == 9
    assert clipped["text"].endswith("(1000 characters)") and clipped["n"] == 3


def _small_store(root: Path) -> Path:
    """A Zarr v3 store shaped like an activation store: vectors (layer, person, hidden) with their
    coordinates (person, and split and label_text listed as coordinates), a nested group, and an
    array whose metadata is damaged."""
    group = zarr.open_group(str(root), mode="w", zarr_format=3)
    group.attrs.put({"factrecall": {"schema": "test"}})
    vectors = group.create_array(
        "vectors", shape=(2, 5, 3), dtype="float32", chunks=(1, 5, 3), dimension_names=("layer", "person", "hidden")
    )
    vectors[...] = np.arange(30, dtype="float32").reshape(2, 5, 3)
    vectors.attrs.put({"coordinates": "split label_text"})
    person = group.create_array("person", shape=(5,), dtype="int64", dimension_names=("person",))
    person[...] = np.arange(100, 105)
    split = group.create_array("split", shape=(5,), dtype=str, dimension_names=("person",))
    split[...] = np.array(["qa_in", "qa_in", "qa_in", "qa_out", "qa_out"])
    label_text = group.create_array("label_text", shape=(5,), dtype=str, dimension_names=("person",))
    label_text[...] = np.array(["Paris", "Rome", "Oslo", "Lima", "Kyiv"])
    group.create_group("probes").create_group("abc").attrs.put({"model": "mix", "settings": {"attribute": "job"}})
    group.create_array("damaged", shape=(2,), dtype="int8")
    (root / "damaged" / "zarr.json").write_text("{ not json")
    return root


def test_walking_a_small_store(tmp_path):
    root = _small_store(tmp_path / "small.zarr")
    nodes, problems = walk_store(root)
    by_path = {n.path: n for n in nodes}
    assert nodes[0].path == "" and nodes[0].kind == "group" and nodes[0].attrs == {"factrecall": {"schema": "test"}}
    # The damaged node first, then arrays (the larger first), then groups; a group's members after it.
    assert [n.path for n in nodes[1:]] == [
        "damaged",
        "vectors",
        "label_text",
        "person",
        "split",
        "probes",
        "probes/abc",
    ]
    assert by_path["damaged"].kind == "broken" and problems == [f"damaged: {by_path['damaged'].error}"]
    vectors = by_path["vectors"]
    assert (vectors.shape, vectors.dims, vectors.dtype, vectors.chunks, vectors.nchunks) == (
        (2, 5, 3),
        ("layer", "person", "hidden"),
        "float32",
        (1, 5, 3),
        2,
    )
    assert by_path["split"].dtype == "string" and by_path["probes"].children == 1
    assert by_path["probes/abc"].attrs["model"] == "mix"
    signature = store_signature(root)
    assert signature == store_signature(root) and len(signature) == 4


def test_a_preview_is_labelled_by_the_coordinates(tmp_path):
    root = _small_store(tmp_path / "small.zarr")
    nodes = {n.path: n for n in walk_store(root)[0]}
    preview, written = read_preview(root, nodes["vectors"], parse_index("1, 1:4, ::-1", (2, 5, 3)))
    assert written == 2
    np.testing.assert_array_equal(preview.data, np.arange(30).reshape(2, 5, 3)[1, 1:4, ::-1])
    assert preview.rows == ["101 · qa_in · Rome", "102 · qa_in · Oslo", "103 · qa_out · Lima"]
    assert preview.cols == ["2", "1", "0"]  # hidden has no coordinate array: its positions
    assert (preview.row_dim, preview.col_dim, preview.note) == ("person", "hidden", "")
    one, _ = read_preview(root, nodes["vectors"], [0, 4, 2])
    assert one.data.shape == (1, 1) and one.rows == [""] and one.cols == ["vectors"]
    # What the index fixes, named by its coordinate where there is one (person 4 is 104), else its position.
    assert (preview.fixed, one.fixed) == ({"layer": "1"}, {"layer": "0", "person": "104", "hidden": "2"})
    strings, _ = read_preview(root, nodes["label_text"], parse_index(":", (5,)))
    assert strings.data[:, 0].tolist() == ["Paris", "Rome", "Oslo", "Lima", "Kyiv"]
    assert strings.rows == ["100", "101", "102", "103", "104"] and strings.cols == ["label_text"]


def test_a_store_that_cannot_be_read_is_a_store_error(tmp_path):
    root = _small_store(tmp_path / "small.zarr")
    nodes = {n.path: n for n in walk_store(root)[0]}
    (root / "vectors" / "c" / "0" / "0" / "0").write_bytes(b"12")  # a truncated chunk
    with pytest.raises(StoreError) as err:
        read_preview(root, nodes["vectors"], [0, range(0, 5), range(0, 3)])
    assert "\n" not in str(err.value)
    (root / "zarr.json").write_text("{ not json")
    with pytest.raises(StoreError):
        walk_store(root)


def test_browsing_needs_no_textual():
    import subprocess

    code = "import sys, factrecall_tui.store_browse; print('textual' in sys.modules, 'zarr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
