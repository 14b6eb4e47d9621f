"""The Store pane as a researcher uses it: choose a run, walk its activation store's tree (the probe
cache included), read an array's metadata and preview slices of it; a bad index or a broken store is
one line, never a crash."""

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np
import zarr
from rich.cells import cell_len
from textual.app import App
from textual.widgets import DataTable, Footer, Input, Select, Tree

import factrecall_tui
from factrecall_tui.runs import scan
from factrecall_tui.store_view import StorePane
from tests.tui.helpers import settle, sites_run


class Host(App):
    CSS_PATH = str(Path(factrecall_tui.__file__).parent / "store_view.tcss")

    def compose(self):
        yield StorePane(id="store")
        yield Footer()


def _copy_run(tiny_run: Path, workspace: Path, name: str, age: int, store: bool = True) -> Path:
    folder = workspace / "runs" / name
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text((tiny_run / "spec.json").read_text())
    if store:
        shutil.copytree(tiny_run / "activations.zarr", folder / "activations.zarr")
    t = 1_700_000_000 - age  # scan orders by spec.json's time, newest first
    os.utime(folder / "spec.json", (t, t))
    return folder


def _cache_probe_result(store: Path) -> str:
    """A cached probe result as store.probes writes it (a group whose attributes hold the rows)."""
    key = "0123456789abcdef0123"
    rows = [{"layer": i, "acc_qa_wqa": 12.5 * i} for i in range(30)]
    group = zarr.open_group(str(store), mode="a", path=f"probes/{key}", zarr_format=3, use_consolidated=False)
    group.attrs.put({"key": key, "model": "mix", "settings": {"attribute": "job", "bio": "bio_long"}, "rows": rows})
    return key


def _tree_labels(tree: Tree) -> dict[str, str]:
    out = {}

    def walk(node):
        out[node.data] = str(node.label)
        for child in node.children:
            walk(child)

    walk(tree.root)
    return out


def _table(table: DataTable) -> list[list[str]]:
    """The cells' texts (the numbers are right-aligned by padding, one width a column)."""
    return [[str(c).strip() for c in table.get_row_at(i)] for i in range(table.row_count)]


async def _type_index(app, pilot, text: str) -> None:
    await pilot.click("#store-index")
    await pilot.press("end", "ctrl+u", *text, "enter")
    await settle(pilot)


def test_browsing_a_store_and_previewing_slices(tiny_run, tmp_path):
    ws = tmp_path / "ws"
    good = _copy_run(tiny_run, ws, "tiny-stage+mix-s0", age=0)
    key = _cache_probe_result(good / "activations.zarr")
    _copy_run(tiny_run, ws, "no-store", age=10, store=False)
    group = zarr.open_group(str(good / "activations.zarr"), mode="r", use_consolidated=False)
    resid = group["resid_mid"]
    people = np.asarray(group["person"][...])
    split = np.asarray(group["split"][...]).tolist()
    label_text = np.asarray(group["label_text"][...]).tolist()

    async def session():
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(StorePane)
            pane.show(scan(ws))
            await settle(pilot)
            # Only the run with a store is offered; the newest is opened.
            assert pane.store_runs == ["tiny-stage+mix-s0"] and pane.run_name == "tiny-stage+mix-s0"
            assert app.query_one("#store-run", Select).value == "tiny-stage+mix-s0"
            labels = _tree_labels(app.query_one("#store-tree", Tree))
            assert labels["resid_mid"] == f"resid_mid {'×'.join(map(str, resid.shape))} float16"
            assert f"probes/{key}" in labels and "mix · job · bio_long" in labels[f"probes/{key}"]
            assert {"written", "person", "label_text", "probes"} <= set(labels)

            # resid_mid is chosen first: its metadata, and a corner of it.
            assert pane.selected == "resid_mid"
            assert f"shape: {resid.shape}" in pane.info_text
            assert "dims: model × format × layer × attribute × person × hidden" in pane.info_text
            assert f"chunks: {resid.chunks} · {resid.nchunks_initialized} of {resid.nchunks} written" in pane.info_text
            assert '"coordinates": "attribute_index split label label_text answer"' in pane.info_text
            assert app.query_one("#store-index", Input).value == "0, 0, 0, 0, :8, :6"
            np.testing.assert_array_equal(pane.preview.data, resid[0, 0, 0, 0, :8, :6])

            # The researcher types an index: the cells are zarr's values, rows labelled by person,
            # split and the attribute's first token, columns by hidden unit.
            await _type_index(app, pilot, "3, 2, 1, 3, 2:12:3, -4:")
            expected = np.asarray(resid[3, 2, 1, 3, 2:12:3, -4:])
            assert "bad" not in pane.index_message and "→ 4×4" in pane.index_message
            rows = _table(app.query_one("#store-preview", DataTable))
            assert len(rows) == 4
            for (label, *cells), person, values in zip(rows, range(2, 12, 3), expected):
                assert label == f"{people[person]} · {split[person]} · {label_text[3][person]}"
                assert [np.float16(c) for c in cells] == list(values)
            assert [str(c.label) for c in app.query_one("#store-preview", DataTable).columns.values()][1:] == [
                "60",
                "61",
                "62",
                "63",
            ]

            # Bad indexes: one line under the input, the preview kept.
            for text, says in (
                ("0, x", "'x' is not an integer"),
                ("0, 0, 9", "out of bounds for layer (size 2)"),
                ("0, :, :, :", "give an integer for all but two"),
                ("1:2:0", "step cannot be zero"),
            ):
                await _type_index(app, pilot, text)
                assert pane.index_message.startswith("bad index") and says in pane.index_message
                assert pane.preview is not None and pane.preview.data.shape == (4, 4)

            # Down the tree with the keys: label_text, a string array labelled by attribute and person.
            tree = app.query_one("#store-tree", Tree)
            tree.focus()
            while pane.selected != "label_text":
                await pilot.press("down")
            await settle(pilot)
            assert app.query_one("#store-index", Input).value == ":, :6"
            rows = _table(app.query_one("#store-preview", DataTable))
            assert [r[0] for r in rows] == np.asarray(group["attribute"][...]).tolist()
            assert [r[1:] for r in rows] == [line[:6] for line in label_text]
            table = app.query_one("#store-preview", DataTable)
            for column in zip(*([str(c) for c in table.get_row_at(i)][1:] for i in range(table.row_count))):
                assert len({cell_len(c) for c in column}) == 1  # right-aligned: one width a column

            # The probe cache group: its rows list is cut for display.
            while pane.selected != f"probes/{key}":
                await pilot.press("down")
            await settle(pilot)
            assert "kind: group" in pane.info_text and "… 22 more" in pane.info_text
            assert app.query_one("#store-index", Input).disabled and pane.preview is None

            # A rescan with nothing changed keeps the cursor; a new probe result is picked up, cursor kept.
            pane.show(scan(ws))
            await settle(pilot)
            assert pane.selected == f"probes/{key}"
            zarr.open_group(
                str(good / "activations.zarr"),
                mode="a",
                path="probes/fedcba9876543210fedc",
                zarr_format=3,
                use_consolidated=False,
            ).attrs.put({"model": "stage", "settings": {}})
            pane.show(scan(ws))
            await settle(pilot)
            assert "probes/fedcba9876543210fedc" in pane.nodes and pane.selected == f"probes/{key}"

            pane.focus_run("no-store")
            assert "no-store has no activation store yet" in pane.message

    asyncio.run(session())


def test_a_broken_store_is_a_message(tiny_run, tmp_path):
    ws = tmp_path / "ws"
    corrupt_root = _copy_run(tiny_run, ws, "corrupt-root", age=0) / "activations.zarr"
    (corrupt_root / "zarr.json").write_text("{ not json")
    corrupt_array = _copy_run(tiny_run, ws, "corrupt-array", age=10) / "activations.zarr"
    (corrupt_array / "resid_mid" / "zarr.json").write_text("{ not json")
    (corrupt_array / "label" / "c" / "0" / "0").write_bytes(b"12")  # a truncated chunk

    async def session():
        app = Host()
        async with app.run_test(size=(100, 30)) as pilot:
            pane = app.query_one(StorePane)
            pane.show(scan(ws))
            await settle(pilot)
            assert pane.run_name == "corrupt-root"
            assert pane.message.startswith("cannot open corrupt-root/activations.zarr:")
            assert "\n" not in pane.message and not pane.nodes

            # The researcher picks the other run in the chooser.
            select = app.query_one("#store-run", Select)
            select.focus()
            await pilot.press("enter", "down", "enter")
            await settle(pilot)
            assert pane.run_name == "corrupt-array"
            assert pane.nodes["resid_mid"].kind == "broken"
            assert _tree_labels(app.query_one("#store-tree", Tree))["resid_mid"].startswith("⚠ resid_mid")
            assert "unreadable: resid_mid:" in pane.message
            pane.focus_run("corrupt-array")
            tree = app.query_one("#store-tree", Tree)
            tree.focus()
            while pane.selected != "label":
                await pilot.press("down")
            await settle(pilot)
            assert pane.index_message.startswith("cannot read label:") and pane.preview is None
            while pane.selected != "resid_mid":  # up to the broken node, listed first
                await pilot.press("up")
            await settle(pilot)
            assert "cannot read this node" in pane.index_message and "error:" in pane.info_text

    asyncio.run(session())


def test_a_store_s_sites_are_listed_and_each_site_s_array_is_browsed_alike(tiny_run, tmp_path):
    """A store dumped at two sites: the line under its summary lists them with their arrays, and the
    researcher previews the other site's array as resid_mid (its NaN of a model not dumped said so)."""
    ws = tmp_path / "ws"
    run = sites_run(tiny_run, ws, "sites", "resid_mid@last,mlp_out@subject_last")
    _copy_run(tiny_run, ws, "before-sites", age=10)  # a store made as every store before sites
    group = zarr.open_group(str(run / "activations.zarr"), mode="r", use_consolidated=False)
    site = group["mlp_out@subject_last"]
    mix = list(np.asarray(group["model"][...])).index("mix")  # the one model dumped here

    async def session():
        app = Host()
        async with app.run_test(size=(100, 30)) as pilot:
            pane = app.query_one(StorePane)
            pane.show(scan(ws))
            await settle(pilot)
            assert pane.run_name == "sites"
            assert pane.sites == [("resid_mid@last", "resid_mid"), ("mlp_out@subject_last", "mlp_out@subject_last")]
            said = "2 sites: resid_mid@last → array resid_mid · mlp_out@subject_last → array mlp_out@subject_last"
            assert pane.sites_text == said
            line = app.query_one("#store-sites")
            assert line.display and str(line.render()) == said
            labels = _tree_labels(app.query_one("#store-tree", Tree))
            assert labels["mlp_out@subject_last"] == f"mlp_out@subject_last {'×'.join(map(str, site.shape))} float16"
            assert "mlp_out@subject_last.checksum" in labels

            # Down the tree to each site's array: its metadata names its site; the corner shown first
            # is the untrained model's, not dumped here: NaN, and the line says what that means.
            tree = app.query_one("#store-tree", Tree)
            tree.focus()
            assert pane.selected == "mlp_out@subject_last"  # the first array (the larger first, then by name)
            for name, held in (("mlp_out@subject_last", "mlp_out@subject_last"), ("resid_mid", "resid_mid@last")):
                while pane.selected != name:
                    await pilot.press("down")
                await settle(pilot)
                assert f"site: {held}\n" in pane.info_text
                assert "dims: model × format × layer × attribute × person × hidden" in pane.info_text
                assert np.isnan(pane.preview.data).all()
                assert "NaN: not written yet" in pane.index_message
            # The researcher types Mix's index: the site's own vectors, as zarr holds them.
            while pane.selected != "mlp_out@subject_last":
                await pilot.press("up")
            await settle(pilot)
            await _type_index(app, pilot, f"{mix}, 2, 1, 3, :8, :6")
            np.testing.assert_array_equal(pane.preview.data, site[mix, 2, 1, 3, :8, :6])
            assert "NaN" not in pane.index_message and "→ 8×6 · model mix" in pane.index_message
            assert not np.array_equal(pane.preview.data, group["resid_mid"][mix, 2, 1, 3, :8, :6])

            # A store made before sites holds resid_mid@last, in its resid_mid array.
            select = app.query_one("#store-run", Select)
            select.focus()
            await pilot.press("enter", "down", "enter")
            await settle(pilot)
            assert pane.run_name == "before-sites"
            assert pane.sites_text == "1 site: resid_mid@last → array resid_mid"
            assert pane.selected == "resid_mid" and "site: resid_mid@last" in pane.info_text

    asyncio.run(session())
