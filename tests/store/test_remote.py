"""A store elsewhere, through fsspec: written by `factrecall-jobs dump RUN --out URL`, read back with
the same API (`store.open(URL)`), probed (the probe cache is written into it), and opened with plain
zarr and xarray. Against a local S3-compatible server that the test starts (moto's, if installed),
and fsspec's in-memory filesystem."""

import os
import socket

import numpy as np
import pytest
import xarray as xr
import zarr

import store
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    # How a researcher points s3fs at an S3-compatible store (MinIO, Ceph, a lab's object store).
    os.environ.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("factrecall")
    yield "s3://factrecall"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(params=["s3", "memory"])
def remote(request):
    if request.param == "s3":
        return request.getfixturevalue("s3_server") + f"/{request.node.name.split('[')[0]}.zarr"
    return f"memory://factrecall/{request.node.name.split('[')[0]}.zarr"


def test_a_store_dumped_to_a_url_reads_back_as_the_local_one(tiny_run, remote, capsys):
    workspace = tiny_run.parent.parent
    assert run_cli("--workspace", workspace, "dump", tiny_run.name, "--out", remote) == 0
    assert f"store.open({remote!r})" in capsys.readouterr().out
    local, far = store.open(tiny_run), store.open(remote)
    assert far.complete() and far.models == local.models and far.layers == local.layers
    for model in far.models:
        np.testing.assert_array_equal(far.acts("qa", 1, "job", model=model), local.acts("qa", 1, "job", model=model))
    assert far.labels("birth_city").equals(local.labels("birth_city"))
    # Dumping again finds every model written: nothing is redone, the store stays whole.
    assert run_cli("--workspace", workspace, "dump", tiny_run.name, "--out", remote) == 0
    assert store.open(remote).complete()
    # Plain zarr and xarray open it by URL too.
    group = zarr.open_group(remote, mode="r")
    assert group["resid_mid"].shape == local.resid.shape
    ds = xr.open_zarr(remote, consolidated=True, zarr_format=3)
    assert list(ds["model"].values) == list(local.models)
    # Probes read it and cache their result in it, as in a local store.
    assert run_cli("--workspace", workspace, "probe", remote, "--models", "mix", "--out", tiny_run / "remote.png") == 0
    capsys.readouterr()
    assert run_cli("--workspace", workspace, "probe", remote, "--models", "mix", "--out", tiny_run / "remote.png") == 0
    # (the cache is written after the dump consolidated the store's metadata: list it unconsolidated)
    cached = zarr.open_group(remote, mode="r", path="probes", use_consolidated=False)
    assert len(list(cached.group_keys())) == 2  # mix and the untrained baseline, each once: the second call read them


def test_a_url_that_holds_something_else_is_refused(remote, capsys, tmp_path):
    group = zarr.open_group(remote, mode="w")
    group.attrs["owner"] = "someone else"
    with pytest.raises(store.StoreError, match="not a factrecall activation store"):
        store.open(remote)
    assert run_cli("--workspace", tmp_path, "probe", remote) == 2
    err = capsys.readouterr().err
    assert "not a factrecall activation store" in err and len(err.strip().splitlines()) == 1
