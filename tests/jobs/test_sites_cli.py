"""Capture sites through the CLI, end to end (`dump --sites`, `probe --site`, `patch --site`; store/names.py,
jobs/run/sites.py, docs/sites.md): a bad site is one line and writes nothing; a dump of several sites
writes an array each that plain zarr and xarray read by its name, refuses another set of sites into the
same store and resumes what a kill left; a store made before sites existed (by the code of f18af7d,
itself) reads on as resid_mid@last with its fingerprint, its values and its files unchanged."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import store
from store.names import DIMS, STORE_NAME
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
BEFORE_SITES = "f18af7d"  # the commit before a0115f7 added sites: its writer wrote no "sites"
HOOKS_ARE = "hooks are resid_pre, resid_mid, resid_post, attn_out, mlp_out"
POSITIONS_ARE = "positions are last, subject_last, name_last"
SITE = "mlp_out@subject_last"  # the second site dumped, beside resid_mid (written `resid_mid`: @last)


def _listing(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under `roots`: a file's size, modification time and SHA-256, a folder's
    presence; what a command must leave as it found it."""
    out: dict[str, tuple] = {}
    for root in roots:
        for p in sorted([root, *root.rglob("*")]) if root.exists() else ():
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("folder",)
            else:
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _one_line(capsys) -> tuple[str, str]:
    """(the one line on stderr, stdout): no traceback, nothing but blank lines on stdout."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert lines[0].startswith("error: "), lines[0]
    assert not captured.out.strip(), captured.out
    return lines[0], captured.out


def _copy_run(tiny_run: Path, workspace: Path, *ignore: str) -> Path:
    copy = workspace / "runs" / tiny_run.name
    shutil.copytree(tiny_run, copy, symlinks=True, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
    return copy


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's tiny run (its store holds resid_mid@last only), that a command may write."""
    return _copy_run(tiny_run, tmp_path / "ws")


# -- bad input: one line, exit 2, nothing written -------------------------------------------------


BAD = [
    (
        ["dump", "{run}", "--sites", "bogus@last"],
        f"error: --sites: unknown hook 'bogus' in site 'bogus@last': {HOOKS_ARE}",
    ),
    (
        ["dump", "{run}", "--sites", "bogus@last", "--out", "{out}"],
        f"error: --sites: unknown hook 'bogus' in site 'bogus@last': {HOOKS_ARE}",
    ),
    (
        ["dump", "{run}", "--sites", "resid_mid@middle"],
        f"error: --sites: unknown position 'middle' in site 'resid_mid@middle': {POSITIONS_ARE}",
    ),
    (
        ["dump", "{run}", "--sites", "resid_mid@middle", "--out", "{out}"],
        f"error: --sites: unknown position 'middle' in site 'resid_mid@middle': {POSITIONS_ARE}",
    ),
    (  # `resid_mid` is resid_mid@last
        ["dump", "{run}", "--sites", "resid_mid@last,resid_mid"],
        "error: --sites: site resid_mid@last is named twice: name each site once",
    ),
    (
        ["dump", "{run}", "--sites", "resid_mid@last,resid_mid", "--out", "{out}"],
        "error: --sites: site resid_mid@last is named twice: name each site once",
    ),
    (
        ["probe", "{run}", "--site", "mlp_out@last"],
        "error: this store has no site mlp_out@last: it has resid_mid@last; "
        "`factrecall-jobs dump RUN --sites mlp_out@last --out OTHER.zarr` dumps it",
    ),
    (
        ["patch", "{run}", "--site", "mlp_out@last"],
        "error: this store has no site mlp_out@last: it has resid_mid@last; "
        "`factrecall-jobs dump RUN --sites mlp_out@last --out OTHER.zarr` dumps it",
    ),
    (
        ["probe", "{run}", "--site", "nothing"],
        f"error: --site: unknown hook 'nothing' in site 'nothing': {HOOKS_ARE}",
    ),
    (
        ["patch", "{run}", "--site", "nothing"],
        f"error: --site: unknown hook 'nothing' in site 'nothing': {HOOKS_ARE}",
    ),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[f"{a[0]}-{a[3]}{'-out' if '--out' in a else ''}" for a, _ in BAD])
def test_a_bad_site_is_one_line_exit_2_and_writes_nothing(run, tmp_path, capsys, argv, message):
    out = tmp_path / "other.zarr"
    before = _listing(run)
    code = run_cli("--workspace", run.parent.parent, *(a.format(run=run.name, out=out) for a in argv))
    line, _ = _one_line(capsys)
    assert code == 2
    assert line == message
    assert _changed(before, _listing(run)) == []  # the run's files and its store, byte for byte and mtime
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


# -- a store of several sites ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def several(tiny_run: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(a copy of the tiny run, a store of its model mix at resid_mid@last and mlp_out@subject_last),
    dumped once through the CLI. Tests that write into the store copy it first."""
    workspace = tmp_path_factory.mktemp("several")
    copy = _copy_run(tiny_run, workspace)
    out = workspace / "sites.zarr"
    with pytest.MonkeyPatch.context() as env:  # as the autouse fixture does, which comes after this one
        env.setenv("XDG_CONFIG_HOME", str(workspace / "config"))
        env.setenv("XDG_CACHE_HOME", str(workspace / "cache"))
        assert (
            run_cli(
                "--workspace",
                workspace,
                "dump",
                copy.name,
                "--models",
                "mix",
                "--sites",
                f"resid_mid,{SITE}",
                "--out",
                out,
            )
            == 0
        )
    return copy, out


def test_a_dump_of_several_sites_writes_an_array_each_that_plain_zarr_and_xarray_read(several, tiny_run):
    run, out = several
    s = store.open(out)
    assert s.sites == ("resid_mid@last", SITE)  # `resid_mid` written as its full name
    assert s.dumped_models() == ["mix"]
    m = s.models.index("mix")

    group = zarr.open_group(str(out), mode="r")
    assert {"resid_mid", "checksum", SITE, f"{SITE}.checksum"} <= set(group.keys())
    resid, site = group["resid_mid"], group[SITE]
    assert site.shape == resid.shape == (len(s.models), 3, s.layers, len(s.attributes), len(s.people), s.hidden)
    assert site.chunks == resid.chunks == (1, 1, 1, 1, s.block, s.hidden)
    assert site.metadata.dimension_names == resid.metadata.dimension_names == DIMS
    assert site.dtype == resid.dtype == np.float16
    assert site.attrs["site"] == SITE and site.attrs["transformer_lens"] == "blocks.{layer}.hook_mlp_out"
    assert resid.attrs["site"] == "resid_mid@last"
    assert np.isnan(site[s.models.index("untrained")]).all()  # not dumped: unwritten

    ds = xr.open_zarr(str(out), consolidated=True, zarr_format=3)
    assert ds[SITE].dims == ds["resid_mid"].dims == DIMS
    assert ds[SITE].encoding["chunks"] == ds["resid_mid"].encoding["chunks"] == site.chunks
    assert {"split", "label", "label_text", "answer"} <= set(ds[SITE].coords)  # the labels come along

    default = store.open(tiny_run)  # the run's own store: resid_mid@last, dumped alone
    for f, fmt in enumerate(s.formats):
        for layer in range(s.layers):
            for a, attribute in enumerate(s.attributes):
                h = s.acts(fmt, layer, attribute, model="mix", site=SITE)
                np.testing.assert_array_equal(site[m, f, layer, a], h)
                np.testing.assert_array_equal(
                    ds[SITE].sel(model="mix", format=fmt, layer=layer, attribute=attribute).values, h
                )
                mid = s.acts(fmt, layer, attribute, model="mix")  # the store's default: resid_mid@last
                np.testing.assert_array_equal(mid, s.acts(fmt, layer, attribute, model="mix", site="resid_mid@last"))
                np.testing.assert_array_equal(resid[m, f, layer, a], mid)
                np.testing.assert_array_equal(
                    ds["resid_mid"].sel(model="mix", format=fmt, layer=layer, attribute=attribute).values, mid
                )
                # a second site dumped beside it changes nothing of resid_mid
                np.testing.assert_array_equal(mid, default.acts(fmt, layer, attribute, model="mix"))
                assert not np.allclose(h, mid)  # the other site's own vectors, not a copy


def test_probe_reads_the_site_it_is_given(several, tmp_path):
    run, out = several
    tables = {}
    for site in ("resid_mid", SITE):
        csv = tmp_path / f"{site}.csv"
        argv = ["probe", out, "--site", site, "--models", "mix", "--no-baseline", "--layers", "1", "--no-cache"]
        assert run_cli("--workspace", run.parent.parent, *argv, "--out", tmp_path / f"{site}.png", "--csv", csv) == 0
        tables[site] = pd.read_csv(csv)
    assert len(tables[SITE]) == len(tables["resid_mid"]) == 1
    assert tables[SITE]["cosine"].iloc[0] != tables["resid_mid"]["cosine"].iloc[0]  # other vectors probed


def test_another_set_of_sites_into_the_same_store_is_refused_in_one_line_and_leaves_it_intact(several, capsys):
    run, out = several
    capsys.readouterr()
    for other, shown in (
        ("resid_mid,attn_out", "['resid_mid@last', 'attn_out@last']"),
        (f"{SITE},resid_mid", f"['{SITE}', 'resid_mid@last']"),  # the same sites in another order: another layout
        ("resid_mid", "['resid_mid@last']"),
    ):
        before = _listing(out)
        code = run_cli(
            "--workspace", run.parent.parent, "dump", run.name, "--models", "mix", "--sites", other, "--out", out
        )
        line, _ = _one_line(capsys)
        assert code == 2
        assert line == (
            f"error: the store at {out} was dumped with other settings or data (sites ['resid_mid@last', "
            f"'{SITE}'], not {shown}); delete it to dump again, or write elsewhere with --out"
        )
        assert _changed(before, _listing(out)) == []
    assert store.open(out).sites == ("resid_mid@last", SITE)


def test_a_dump_of_several_sites_a_kill_interrupted_resumes_only_the_unflagged_block(several, tmp_path):
    """What a SIGKILL mid-dump leaves (tests/store/test_dump_kill.py kills a real process; here its
    traces are planted, as tests/store/test_store.py does): the chunks of both sites written without
    their block's flag, and a chunk's temporary file. The same command without --sites resumes with the
    store's sites: that block rewritten, every other chunk file left as it is, the values the dump's."""
    run, whole = several
    out = tmp_path / "killed.zarr"
    shutil.copytree(whole, out)
    s = store.open(out)
    m, f = s.models.index("mix"), s.formats.index("qa")
    written = zarr.open_array(out / "written", mode="r+")
    flags = written[...]
    flags[m, f, 0] = False
    written[...] = flags
    for name in ("resid_mid", SITE):  # written, not yet flagged: stale bytes
        chunk = out / name / "c" / str(m) / str(f) / "1" / "2" / "0" / "0"
        chunk.write_bytes(b"\0" * chunk.stat().st_size)
    stray = out / SITE / "c" / str(m) / str(f) / "0" / "0" / "0" / "0.1f2e.partial"
    stray.write_bytes(b"half a chunk")
    with pytest.raises(store.StoreError, match="model mix format qa is not completely dumped yet"):
        store.open(out).acts("qa", 1, "job", model="mix", site=SITE)
    kept = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns)
        for name in ("resid_mid", SITE)
        for fmt in range(len(s.formats))
        if fmt != f
        for p in (out / name / "c" / str(m) / str(fmt)).rglob("*")
        if p.is_file()
    }
    assert len(kept) == 2 * 2 * s.layers * len(s.attributes)

    assert run_cli("--workspace", run.parent.parent, "dump", run.name, "--models", "mix", "--out", out) == 0
    assert not stray.exists()
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == kept  # not one finished chunk rewritten
    resumed = store.open(out)
    assert resumed.sites == ("resid_mid@last", SITE) and resumed.dumped_models() == ["mix"]
    for name in ("resid_mid", SITE):
        np.testing.assert_array_equal(
            zarr.open_array(out / name, mode="r")[...], zarr.open_array(whole / name, mode="r")[...]
        )
    np.testing.assert_array_equal(
        resumed.acts("qa", 1, "job", model="mix", site=SITE),
        store.open(whole).acts("qa", 1, "job", model="mix", site=SITE),
    )


# -- a store made before sites --------------------------------------------------------------------


def _old_code(tmp: Path) -> Path | None:
    """The source of f18af7d (jobs, store, factrecall_tui) in `tmp`, from this checkout's git history;
    None where there is none (an installed copy without .git)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BEFORE_SITES, "jobs", "store", "factrecall_tui"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    base = tmp / "base"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(base, filter="data")
    return base


def _strip_sites(url: Path) -> None:
    """Make a store as the writer before sites wrote it (/tmp/base/store/writer.py against store/writer.py):
    no `sites` in the group's attributes, no `site` or `transformer_lens` on resid_mid's, in its own
    zarr.json and in the consolidated metadata. Everything else it wrote is the same."""
    root = json.loads((url / "zarr.json").read_text())
    array = json.loads((url / "resid_mid" / "zarr.json").read_text())
    del root["attributes"]["factrecall"]["sites"]
    for attrs in (root["consolidated_metadata"]["metadata"]["resid_mid"]["attributes"], array["attributes"]):
        del attrs["site"], attrs["transformer_lens"]
    (url / "zarr.json").write_text(json.dumps(root, indent=2))
    (url / "resid_mid" / "zarr.json").write_text(json.dumps(array, indent=2))


@pytest.fixture(scope="module")
def old_store(tiny_run: Path, tmp_path_factory) -> tuple[Path, str]:
    """(a copy of the tiny run whose activations.zarr the code of f18af7d dumped, how it was made). Its
    store and dump marker removed, `dump RUN` makes both again (and marks the step done), run in a
    process of its own whose `jobs` and `store` are f18af7d's. Without the git history, the store is
    this code's with what the old writer did not write taken out (`_strip_sites`)."""
    tmp = tmp_path_factory.mktemp("old")
    workspace = tmp / "ws"
    run = _copy_run(tiny_run, workspace, STORE_NAME, "dump.json", "run.lock")
    own = {"XDG_CONFIG_HOME": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache")}  # as the autouse fixture
    base = _old_code(tmp)
    if base is None:
        with pytest.MonkeyPatch.context() as env:
            for key, value in own.items():
                env.setenv(key, value)
            assert run_cli("--workspace", workspace, "dump", run.name) == 0
        _strip_sites(run / STORE_NAME)
        return run, "stripped"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--workspace", str(workspace), "dump", run.name],
        cwd=tmp,  # not this checkout: `python -m` puts the working folder first on sys.path
        env={**os.environ, **own, "PYTHONPATH": str(base)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return run, "old code"


def test_a_store_made_before_sites_reads_on_as_resid_mid_at_last_with_no_rewrite(old_store, tiny_run, tmp_path):
    run, made = old_store
    url = run / STORE_NAME
    meta = json.loads((url / "zarr.json").read_text())["attributes"]["factrecall"]
    assert "sites" not in meta, made  # the old writer's store indeed
    assert "site" not in json.loads((url / "resid_mid" / "zarr.json").read_text())["attributes"]
    before = _listing(url)

    old, new = store.open(run), store.open(tiny_run)  # through the run folder: its marker's fingerprint checked
    assert old.sites == ("resid_mid@last",)
    assert old.site() == old.site("resid_mid") == old.site("resid_mid@last") == "resid_mid@last"
    assert (
        old.meta["fingerprint"]
        == new.meta["fingerprint"]
        == json.loads((run / "done" / "dump.json").read_text())["fingerprint"]
    )
    assert old.dumped_models() == list(old.models) == list(new.models)
    for model in old.models:
        for fmt in old.formats:
            for layer in range(old.layers):
                for attribute in old.attributes:
                    h = old.acts(fmt, layer, attribute, model=model)
                    np.testing.assert_array_equal(h, new.acts(fmt, layer, attribute, model=model))
                    np.testing.assert_array_equal(
                        h, old.acts(fmt, layer, attribute, model=model, site="resid_mid@last")
                    )
    with pytest.raises(store.StoreError, match="this store has no site mlp_out@last: it has resid_mid@last"):
        old.acts("qa", 0, "job", model="mix", site="mlp_out")
    assert np.isfinite(old.to_xarray()["resid_mid"].sel(model="mix", format="qa", layer=1).values).all()
    assert _changed(before, _listing(url)) == []  # reading wrote nothing

    # A probe reads it (and keeps its result in the store's probes/, which is all it writes there), with
    # the numbers a store this code dumped gives.
    ws = run.parent.parent
    probe = ["--site", "resid_mid", "--models", "mix", "--no-baseline", "--layers", "1"]
    assert (
        run_cli(
            "--workspace", ws, "probe", run.name, *probe, "--out", tmp_path / "old.png", "--csv", tmp_path / "old.csv"
        )
        == 0
    )
    changed = _changed(before, _listing(url))
    assert changed and all(Path(p).is_relative_to(url / "probes") for p in changed), changed
    fresh = tmp_path / "new.zarr"
    shutil.copytree(tiny_run / STORE_NAME, fresh)
    assert (
        run_cli("--workspace", ws, "probe", fresh, *probe, "--out", tmp_path / "new.png", "--csv", tmp_path / "new.csv")
        == 0
    )
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "old.csv"), pd.read_csv(tmp_path / "new.csv"))

    # A dump by this code resumes it as it is (the same layout): nothing to do, nothing rewritten.
    before = _listing(url)
    assert run_cli("--workspace", ws, "dump", run.name) == 0
    assert run_cli("--workspace", ws, "dump", run.name, "--sites", "resid_mid") == 0
    assert _changed(before, _listing(url)) == []
    assert store.open(run).sites == ("resid_mid@last",)


def test_other_sites_into_a_store_made_before_sites_are_refused_and_leave_it_intact(old_store, capsys):
    run, _ = old_store
    url = run / STORE_NAME
    before = _listing(url)
    capsys.readouterr()
    code = run_cli("--workspace", run.parent.parent, "dump", run.name, "--sites", "resid_mid,mlp_out")
    line, _ = _one_line(capsys)
    assert code == 2
    assert line.startswith(f"error: the store at {url} was dumped with other settings or data (sites ")
    assert line.endswith(
        "not ['resid_mid@last', 'mlp_out@last']); delete it to dump again, or write elsewhere with --out"
    )
    assert _changed(before, _listing(url)) == []
    assert store.open(run).sites == ("resid_mid@last",)


def test_the_refusal_names_the_site_a_store_made_before_sites_holds(old_store, capsys):
    run, _ = old_store
    capsys.readouterr()
    assert run_cli("--workspace", run.parent.parent, "dump", run.name, "--sites", "resid_mid,mlp_out") == 2
    line, _ = _one_line(capsys)
    assert "(sites ['resid_mid@last'], not ['resid_mid@last', 'mlp_out@last'])" in line
