"""The activation store end to end: `factrecall-jobs run` dumps it, and it opens three ways (the
project's API, plain zarr, xarray) with vectors equal to the model's own hidden states recomputed
independently; HDF5 export, fsspec URLs, and one clear line for every store that is not right."""

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import store
from jobs.run.dump import DumpOptions
from jobs.run.files import read_jsonl
from jobs.run.folder import RunFolder
from jobs.run.model import load_model
from jobs.run.pipeline import load_prompts, make_tokenizer, run_dump
from jobs.run.tokenizer import load_tokenizer
from jobs.words import ATTRIBUTES, FORMATS
from tests.helpers import run_cli
from tests.store.test_sites import _parts

MODELS = ["untrained", "bio", "stage", "mix"]


def test_a_run_dumps_a_store_that_opens_three_ways(tiny_run):
    s = store.open(tiny_run)
    assert s.models == tuple(MODELS) and s.formats == FORMATS and s.attributes == ATTRIBUTES
    assert s.complete() and s.dtype == np.float16 and s.layers == 2 and s.hidden == 64
    people = read_jsonl(tiny_run / "data" / "people.jsonl")
    assert s.people.tolist() == [p["index"] for p in people]
    assert s.split.tolist() == [p["split"] for p in people]
    targets = read_jsonl(tiny_run / "data" / "targets.jsonl")
    labels = s.labels("employer")
    assert labels["label"].tolist() == [t["first_token_id"] for t in targets[ATTRIBUTES.index("employer") :: 6]]
    tok = load_tokenizer(tiny_run / "tokenizer")
    assert labels["label_text"].tolist() == tok.convert_ids_to_tokens(labels["label"].tolist())
    assert all(a.startswith(t) for a, t in zip(labels["answer"], labels["label_text"]))
    assert len(s.labels("job", split="qa_out")) == int((s.split == "qa_out").sum())

    z = zarr.open_group(tiny_run / "activations.zarr", mode="r")
    ds = xr.open_zarr(tiny_run / "activations.zarr")
    assert z["resid_mid"].metadata.dimension_names == ("model", "format", "layer", "attribute", "person", "hidden")
    assert z.attrs["factrecall"]["hook"] == "resid_mid" and z.attrs["factrecall"]["spec"]["preset"] == "tiny"
    for model in MODELS:
        for fmt in FORMATS:
            for layer in range(s.layers):
                ours = s.acts(fmt, layer, "job", model=model)
                assert ours.shape == (16, 64) and np.isfinite(ours).all()
                plain = z["resid_mid"][MODELS.index(model), FORMATS.index(fmt), layer, ATTRIBUTES.index("job")]
                labelled = ds.resid_mid.sel(model=model, format=fmt, layer=layer, attribute="job")
                np.testing.assert_array_equal(ours, plain)
                np.testing.assert_array_equal(ours, labelled.values)
    # xarray carries the labels along with a selection, with no project code
    sel = ds.resid_mid.sel(model="mix", format="qa", layer=1, attribute="job")
    assert sel.label.values.tolist() == labels_of(s, "job") and sel.split.values.tolist() == s.split.tolist()
    np.testing.assert_array_equal(
        s.acts("qa", 1, "job", model="mix", split="qa_in"), s.acts("qa", 1, "job", model="mix")[s.split == "qa_in"]
    )
    # a trained model's formats are different vectors; the untrained model's too
    assert not np.array_equal(s.acts("qa", 1, "job", model="mix"), s.acts("bio_long", 1, "job", model="mix"))
    assert not np.array_equal(s.acts("qa", 1, "job", model="mix"), s.acts("qa", 1, "job", model="untrained"))


def labels_of(s, attribute):
    return s.labels(attribute)["label"].tolist()


def _rebuild(model, ids: list[int]) -> np.ndarray:
    """h at the last token of one prompt alone, every layer: block input + attention output."""
    return _parts(model, ids, len(ids) - 1, "self_attn", "post_attention_layernorm", True)["resid_mid"].numpy()


def test_stored_vectors_equal_the_models_hidden_states_recomputed_one_prompt_at_a_time(tiny_run, tmp_path):
    f32 = tmp_path / "f32.zarr"
    assert (
        run_cli(
            "--workspace",
            tiny_run.parent.parent,
            "dump",
            tiny_run.name,
            "--dtype",
            "float32",
            "--out",
            f32,
            "--models",
            "stage",
            "mix",
            "--batch-size",
            "7",
        )
        == 0
    )
    exact, half = store.open(f32), store.open(tiny_run)
    assert exact.dtype == np.float32 and exact.dumped_models() == ["stage", "mix"]
    prompts = load_prompts(tiny_run)
    tok = load_tokenizer(tiny_run / "tokenizer")
    for name in ("stage", "mix"):
        model = load_model(tiny_run / "checkpoints" / name / "final", torch.device("cpu")).eval()
        for fmt in FORMATS:
            want = np.stack(
                [_rebuild(model, tok(p.text(fmt))["input_ids"]) for p in prompts]
            )  # (prompt, layer, hidden)
            want = want.reshape(len(exact.people), len(ATTRIBUTES), exact.layers, exact.hidden)
            for layer in range(exact.layers):
                for a, attribute in enumerate(ATTRIBUTES):
                    got = exact.acts(fmt, layer, attribute, model=name)
                    np.testing.assert_allclose(got, want[:, a, layer], atol=2e-5, rtol=1e-5)
                    # float16, the default, is the same vectors to half precision
                    np.testing.assert_allclose(half.acts(fmt, layer, attribute, model=name), got, rtol=2e-3, atol=2e-4)


def test_a_store_at_an_fsspec_url_reads_the_same(tiny_run, tmp_path):
    url = "memory://factrecall-test/activations.zarr"
    copy = tmp_path / tiny_run.name  # the dump's events go to the run folder: not the shared run's
    shutil.copytree(tiny_run, copy)
    with RunFolder.resume(copy) as run:
        prompts = load_prompts(run.path)
        tok, targets = make_tokenizer(run, prompts)
        info = run_dump(run, tok, prompts, targets, DumpOptions(url=url, models=("mix",)))
    assert info["models"] == ["mix"] and info["url"] == url
    remote, local = store.open(url), store.open(tiny_run)
    assert remote._raw_roots["resid_mid@last"] is None  # read through zarr, not the local fast path
    for fmt in FORMATS:
        np.testing.assert_array_equal(
            remote.acts(fmt, 1, "university", model="mix"), local.acts(fmt, 1, "university", model="mix")
        )
    with pytest.raises(store.StoreError, match="model stage format bio_long is not completely dumped yet"):
        remote.acts("bio_long", 0, "job", model="stage")
    assert remote.to_xarray().resid_mid.sel(model="mix").notnull().all()


def test_export_to_hdf5_keeps_names_dims_and_values(tiny_run, tmp_path, capsys):
    # A path longer than any terminal line: "wrote PATH" keeps it whole, to be copied (a wrapped one
    # breaks it with a newline; a longer tmp path, as under pytest-xdist, showed it).
    out = tmp_path / ("a" * 80) / ("b" * 80) / "acts.h5"
    out.parent.mkdir(parents=True)
    assert run_cli("--workspace", tiny_run.parent.parent, "export", tiny_run.name, "--hdf5", out) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    s = store.open(tiny_run)
    with h5py.File(out, "r") as f:
        resid = f["resid_mid"]
        assert [d.label for d in resid.dims] == ["model", "format", "layer", "attribute", "person", "hidden"]
        assert [x.decode() for x in resid.dims[0][0][...]] == MODELS  # the model dimension scale
        np.testing.assert_array_equal(resid[...], s.to_xarray().resid_mid.values)
        assert f["label"].dims[1].label == "person" and f["split"].asstr()[...].tolist() == s.split.tolist()
        assert json.loads(f.attrs["factrecall"])["schema"] == "factrecall.activations"
    assert not list(tmp_path.glob(".*partial"))


def _copy(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_run / "activations.zarr", copy)
    return copy


def _edit_attrs(path: Path, change) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    change(meta["attributes"]["factrecall"])
    meta.pop("consolidated_metadata", None)
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", r"no activation store at .*missing\.zarr; `factrecall-jobs dump RUN` makes one"),
        ("not zarr", r"is not a Zarr v3 store \(no zarr.json\)"),
        ("foreign", r"is a Zarr group but not a factrecall activation store"),
        ("newer", r"has store schema version 2, newer than this factrecall reads \(1\); upgrade factrecall"),
        ("truncated", r"is truncated: array 'label' is missing; delete the store and dump again"),
        ("chunk cut short", r"chunk.* damaged.*; delete the store and dump again"),
    ],
)
def test_a_store_that_is_not_right_gets_one_clear_line(tiny_run, tmp_path, capsys, damage, message):
    path = _copy(tiny_run, tmp_path)
    if damage == "missing":
        path = tmp_path / "missing.zarr"
    elif damage == "not zarr":
        shutil.rmtree(path)
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    elif damage == "foreign":
        shutil.rmtree(path)
        zarr.open_group(path, mode="w").create_array("x", shape=(3,), dtype="int8")
    elif damage == "newer":
        _edit_attrs(path, lambda m: m.update(version=2))
    elif damage == "truncated":
        shutil.rmtree(path / "label")
    elif damage == "chunk cut short":
        chunk = path / "resid_mid" / "c" / "3" / "2" / "1" / "3" / "0" / "0"
        chunk.write_bytes(chunk.read_bytes()[:100])
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(store.StoreError, match=message):
        store.open(path).acts("qa", 1, "job", model="mix")
    # the CLI says the same in one line, exit status 2, no traceback, nothing changed on disk
    assert run_cli("export", path, "--hdf5", tmp_path / "out.h5") == 2
    err = capsys.readouterr().err
    assert re.search(message, err.replace("\n", "")) and "Traceback" not in err
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_asking_for_what_the_store_does_not_hold_is_one_clear_line(tiny_run):
    s = store.open(tiny_run)
    with pytest.raises(store.StoreError, match=r"layer 2 does not exist: this store has layers 0..1"):
        s.acts("qa", 2, "job", model="mix")
    with pytest.raises(store.StoreError, match=r"unknown format 'bio': this store has bio_long, bio_short, qa"):
        s.acts("bio", 0, "job", model="mix")
    with pytest.raises(store.StoreError, match=r"unknown attribute 'age'"):
        s.labels("age")
    with pytest.raises(store.StoreError, match=r"say which model: this store has untrained, bio, stage, mix"):
        s.acts("qa", 0, "job")


def test_a_dump_with_other_settings_never_touches_the_store(tiny_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in (tiny_run / "activations.zarr").rglob("*")}
    assert run_cli("--workspace", tiny_run.parent.parent, "dump", tiny_run.name, "--dtype", "float32") == 2
    err = capsys.readouterr().err
    assert "was dumped with other settings or data (dtype 'float16', not 'float32'); delete it" in err.replace("\n", "")
    assert {p: p.stat().st_mtime_ns for p in (tiny_run / "activations.zarr").rglob("*")} == before
    # the same settings again: nothing to do, nothing rewritten
    assert run_cli("--workspace", tiny_run.parent.parent, "dump", tiny_run.name) == 0
    assert {p: p.stat().st_mtime_ns for p in (tiny_run / "activations.zarr").rglob("*")} == before


def test_resuming_a_dump_takes_the_stores_own_settings(tiny_run, tmp_path):
    out = tmp_path / "f32.zarr"
    ws = tiny_run.parent.parent
    assert (
        run_cli(
            "--workspace",
            ws,
            "dump",
            tiny_run.name,
            "--models",
            "stage",
            "--dtype",
            "float32",
            "--chunk-people",
            "5",
            "--compressor",
            "zstd",
            "--out",
            out,
        )
        == 0
    )
    before = {p: p.stat().st_mtime_ns for p in (out / "resid_mid").rglob("*") if p.is_file()}
    # no flags repeated: the store's float32, zstd and blocks of 5 are kept; only mix is added
    assert run_cli("--workspace", ws, "dump", tiny_run.name, "--models", "stage", "mix", "--out", out) == 0
    s = store.open(out)
    assert s.dtype == np.float32 and s.block == 5 and s.meta["compressor"] == "zstd"
    assert s.dumped_models() == ["stage", "mix"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_the_readme_example_runs(tiny_run, capsys):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = re.search(r"```python\n(# the store example\n.*?)```", readme, re.S).group(1)
    exec(code.replace('"workspace/runs/cpu-stage+mix-s0"', repr(str(tiny_run))), {})
    s = store.open(tiny_run)
    classes = s.labels("job")["label"].nunique()
    assert capsys.readouterr().out.splitlines() == [f"(16, 64) float16 {classes} classes", str(s.split[:3])]


def test_what_a_killed_dump_leaves_behind_is_cleaned_up_or_made_anew(tiny_run, tmp_path):
    """The moments a SIGKILL can leave traces, planted deterministically: a skeleton never renamed
    into place, a chunk's temporary file, and chunks written without their block's flag."""
    ws = tmp_path
    run = ws / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run)
    out = ws / "k.zarr"
    (ws / "k.zarr.partial").mkdir()
    (ws / "k.zarr.partial" / "junk").write_text("a skeleton a kill interrupted")
    assert run_cli("--workspace", ws, "dump", run.name, "--models", "mix", "--out", out) == 0
    assert not (ws / "k.zarr.partial").exists()
    stray = out / "resid_mid" / "c" / "0" / "0" / "0" / "0" / "0" / "0.1f2e.partial"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a chunk")
    # chunks of a block whose flag is not set (killed between the two): rewritten, then flagged
    written = zarr.open_array(out / "written", mode="r+")
    flags = written[...]
    flags[3, 2, 0] = False
    written[...] = flags
    chunk = out / "resid_mid" / "c" / "3" / "2" / "1" / "0" / "0" / "0"
    chunk.write_bytes(b"\0" * chunk.stat().st_size)
    with pytest.raises(store.StoreError, match="model mix format qa is not completely dumped yet"):
        store.open(out).acts("qa", 1, "birth_date", model="mix")
    assert run_cli("--workspace", ws, "dump", run.name, "--models", "mix", "--out", out) == 0
    assert not stray.exists()
    np.testing.assert_array_equal(
        store.open(out).acts("qa", 1, "birth_date", model="mix"),
        store.open(tiny_run).acts("qa", 1, "birth_date", model="mix"),
    )


def test_a_last_partial_block_reads_the_same_through_both_paths(tiny_run, tmp_path):
    out = tmp_path / "blocks.zarr"
    assert (
        run_cli(
            "--workspace",
            tiny_run.parent.parent,
            "dump",
            tiny_run.name,
            "--models",
            "stage",
            "--chunk-people",
            "5",
            "--out",
            out,
        )
        == 0
    )  # 16 people: blocks of 5, 5, 5 and 1
    s = store.open(out)
    assert s.block == 5 and s.written().shape[2] == 4 and s._raw_roots["resid_mid@last"] is not None
    for layer in range(s.layers):
        fast = s.acts("bio_short", layer, "university", model="stage")
        np.testing.assert_array_equal(fast, s.read_array("resid_mid", (s.models.index("stage"), 1, layer, 2)))
        np.testing.assert_array_equal(fast, store.open(tiny_run).acts("bio_short", layer, "university", model="stage"))


def test_a_dump_never_mixes_two_runs_or_writes_over_someone_elses_data(tiny_run, tmp_path, capsys):
    ws = tmp_path
    shutil.copytree(tiny_run, ws / "runs" / "a")
    out = ws / "shared.zarr"
    assert run_cli("--workspace", ws, "dump", "a", "--models", "mix", "--out", out) == 0
    # the same run again (its weights are known by content: a rewrite of the same bytes is the same model)
    weights = ws / "runs" / "a" / "checkpoints" / "mix" / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes())
    assert run_cli("--workspace", ws, "dump", "a", "--models", "mix", "--out", out) == 0
    # another run (here: a copy that says it is seed 1, its spec and its data marker alike): refused
    shutil.copytree(ws / "runs" / "a", ws / "runs" / "b")
    for rel, node in (("spec.json", lambda d: d), ("done/data.json", lambda d: d["identity"])):
        data = json.loads((ws / "runs" / "b" / rel).read_text())
        node(data)["seed"] = 1
        (ws / "runs" / "b" / rel).write_text(json.dumps(data))
    capsys.readouterr()
    assert run_cli("--workspace", ws, "dump", "b", "--models", "mix", "--out", out) == 2
    assert "was dumped with other settings or data (another run)" in capsys.readouterr().err.replace("\n", "")
    # an fsspec location that holds something else is never written over
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/project/results/notes.txt", b"keep me")
    assert run_cli("--workspace", ws, "dump", "a", "--models", "mix", "--out", "memory://project/results") == 2
    assert "already holds data that is not a factrecall store" in capsys.readouterr().err
    assert fs.cat("/project/results/notes.txt") == b"keep me"


def test_a_missing_chunk_of_a_compressed_store_is_an_error_not_nan(tiny_run, tmp_path):
    out = tmp_path / "z.zarr"
    assert (
        run_cli(
            "--workspace",
            tiny_run.parent.parent,
            "dump",
            tiny_run.name,
            "--models",
            "mix",
            "--compressor",
            "zstd",
            "--out",
            out,
        )
        == 0
    )
    s = store.open(out)
    assert s._raw_roots["resid_mid@last"] is None  # compressed: read through zarr
    np.testing.assert_array_equal(
        s.acts("qa", 0, "job", model="mix"), store.open(tiny_run).acts("qa", 0, "job", model="mix")
    )
    (out / "resid_mid" / "c" / "3" / "2" / "0" / "3" / "0" / "0").unlink()
    with pytest.raises(store.StoreError, match="a chunk of a block marked written is missing"):
        store.open(out).acts("qa", 0, "job", model="mix")
