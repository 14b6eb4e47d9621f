"""A store is validated before it is read (issue 33, class 4): stores crafted the ways a collaborator
crafted them, one test per kind of failure they caused, each driving the CLI as a user would
(`probe RUN`, `export RUN --hdf5 OUT`) and the Python API (`store.open`):

1. metadata that made zarr, numcodecs, numpy or pandas raise (a foreign codec, a shape of 10**12, a
   chunk shape of 0, fill values that are not the dtype's, arrays of the wrong length, layers: 10**9);
2. metadata or chunks that made a read unbounded (a person array of 10**8, a zstd bomb, a string
   chunk whose header claims 2**30 strings);
3. edits that gave a silently wrong answer (no checksum array, a swapped split, an edited label);
4. special files where the store has regular files (a FIFO blocks forever, a device never ends);
5. cached probe and intervention results edited, cut, or from before they carried a digest.

Cases 1-4 must end as exit status 2 with one line on stderr naming the problem (and a StoreError
saying the same from the API); case 5 as exit status 0 with the numbers of the store as dumped,
computed again (and the entry rewritten so that the next request is served from it).

Run against code without the fix, a verb may hang or allocate without bound: a verb run in this
process has a time limit (SIGALRM) and an address-space limit (RLIMIT_AS) as safety nets, and the
special files are read in a child process with a timeout, so that this file fails rather than hangs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import resource
import shutil
import socket
import stat
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import zarr

import store
from jobs.cli import main
from store import interventions, probes
from tests.guards import bounded
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
STORE = "activations.zarr"
CHUNK = "resid_mid/c/3/2/1/3/0/0"  # mix, qa, layer 1, job: read by both verbs
OTHER_LAYER = "resid_mid/c/3/2/0/3/0/0"  # mix, qa, layer 0, job
SECONDS = 300  # the safety net's time limit for one verb (a working one takes seconds)
MEMORY = 4 << 30  # ... and how much more address space it may take


# -- running a verb -------------------------------------------------------------------------------
@contextmanager
def _bounded(memory: bool = True):
    """The safety nets for a verb run in this process (tests/guards.py); with the fix, never reached."""
    with bounded("the verb", SECONDS, MEMORY if memory else None):
        yield


def _cli(*argv, memory: bool = True) -> tuple[int, str, str]:
    """`factrecall-jobs ARGV` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with _bounded(memory), redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _cap_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))


CLI_CHILD = "import sys\nfrom jobs.cli import main\nsys.exit(main(sys.argv[1:]))\n"
API_CHILD = (
    "import sys, store\ntry:\n    store.open(sys.argv[1]).acts('qa', 1, 'job', model='mix')\n"
    "except store.StoreError as err:\n    print(err, file=sys.stderr)\n    sys.exit(2)\n"
)


def _child(code: str, *argv, seconds: int = 120) -> tuple[int, str, str]:
    """A script run in a child process of this checkout (never this process: it may block for good
    where the fix is missing), killed after `seconds`."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *map(str, argv)],
            capture_output=True,
            text=True,
            timeout=seconds,
            cwd=ROOT,
            preexec_fn=_cap_child,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(map(str, argv))}: still blocked after {seconds} s")
    return proc.returncode, proc.stdout, proc.stderr


def _verbs(ws: Path, run: Path) -> dict[str, list]:
    out = ws / "OUT"
    out.mkdir(exist_ok=True)
    return {
        "probe": [
            "--workspace",
            ws,
            "probe",
            run.name,
            "--attribute",
            "job",
            "--out",
            out / "p.png",
            "--csv",
            out / "p.csv",
        ],
        "export": ["--workspace", ws, "export", run.name, "--hdf5", out / "x.h5"],
    }


def _refused(code: int, err: str, message: str, verb: str = "the API") -> None:
    said = err.strip()
    assert "Traceback" not in said, (verb, said[-3000:])
    assert code == 2, (verb, said[-3000:])
    assert len(said.splitlines()) == 1, (verb, said)
    assert re.search(message, said), (verb, said)


def _copy(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    run = ws / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("probe-*.png", "patch-*.png"))
    return ws, run


# -- crafting -------------------------------------------------------------------------------------
def _edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _array_meta(name: str, change):
    return lambda run, ws: _edit_json(run / STORE / name / "zarr.json", change)


def _attrs(change):
    """Edit the group's factrecall attributes (the consolidated copy of the arrays is left as it was)."""
    return lambda run, ws: _edit_json(run / STORE / "zarr.json", lambda m: change(m["attributes"]["factrecall"]))


def _set(key, value):
    return lambda meta: meta.update({key: value})


def _chunk_shape(shape):
    return lambda meta: meta["chunk_grid"]["configuration"].update(chunk_shape=shape)


def _rewrite(name: str, values: np.ndarray, chunks=None):
    """Make `name` anew, as plain zarr writes it: a well-formed array holding `values`."""

    def craft(run: Path, ws: Path) -> None:
        group = zarr.open_group(str(run / STORE), mode="r+", zarr_format=3, use_consolidated=False)
        old = group[name]
        new = group.create_array(
            name,
            shape=values.shape,
            dtype=old.dtype,
            chunks=chunks or values.shape,
            dimension_names=old.metadata.dimension_names,
            fill_value=old.fill_value,
            overwrite=True,
        )
        new[...] = values

    return craft


def _read(run: Path, name: str) -> np.ndarray:
    return np.asarray(zarr.open_array(str(run / STORE / name), mode="r")[...])


def _swap_split(run: Path, ws: Path) -> None:
    split = np.asarray(_read(run, "split").tolist())
    arr = zarr.open_array(str(run / STORE / "split"), mode="r+")
    arr[...] = np.where(split == "qa_in", "qa_out", "qa_in")


def _swap_split_and_forge(run: Path, ws: Path) -> None:
    """The split swapped and the group's fingerprint recomputed to match: only the run's own record
    of what it dumped tells."""
    from store.layout import Layout

    _swap_split(run, ws)
    meta = json.loads((run / STORE / "zarr.json").read_text())["attributes"]["factrecall"]
    strings = lambda name: np.asarray(_read(run, name).tolist())  # noqa: E731
    forged = Layout(
        models=tuple(meta["models"]),
        formats=tuple(meta["formats"]),
        attributes=tuple(meta["attributes"]),
        layers=meta["layers"],
        hidden=meta["hidden"],
        people=_read(run, "person"),
        split=strings("split"),
        label=_read(run, "label"),
        label_text=strings("label_text"),
        answer=strings("answer"),
        dtype=meta["dtype"],
        compressor=meta["compressor"],
        chunk_people=meta["chunk_people"],
        source=meta["source"],
    ).fingerprint()
    _attrs(_set("fingerprint", forged))(run, ws)


def _edit_label(run: Path, ws: Path) -> None:
    arr = zarr.open_array(str(run / STORE / "label"), mode="r+")
    label = np.asarray(arr[...])
    label[3, 0] = label[3, 1] if label[3, 1] != label[3, 0] else label[3, 0] + 1
    arr[...] = label


def _no_checksums_and_layers_swapped(run: Path, ws: Path) -> None:
    shutil.rmtree(run / STORE / "checksum")
    a, b = run / STORE / CHUNK, run / STORE / OTHER_LAYER
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def _layers(run: Path, ws: Path) -> None:
    """layers: 10**9 where every array that has a layer dimension agrees (so the old shape check passed)."""
    _attrs(_set("layers", 10**9))(run, ws)
    for name, axis in (("resid_mid", 2), ("checksum", 2), ("layer", 0)):
        _array_meta(name, lambda m, axis=axis: m["shape"].__setitem__(axis, 10**9))(run, ws)


def zstd_bomb(size: int) -> bytes:
    """One zstd frame that declares and decodes to `size` zero bytes: RLE blocks of 128 KiB, 4 bytes
    each, so 1 GiB is 32 KiB on disk."""
    block = 128 << 10
    out = bytearray(b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + size.to_bytes(8, "little"))  # single segment, 8-byte size
    for start in range(0, size, block):
        n = min(block, size - start)
        last = start + n >= size
        out += (int(last) | (1 << 1) | (n << 3)).to_bytes(3, "little") + b"\0"
    return bytes(out)


def _bomb(key: str, size: int):
    return lambda run, ws: (run / STORE / key).write_bytes(zstd_bomb(size))


def _string_count(key: str, count: int):
    """A string chunk whose vlen-utf8 header says it holds `count` strings (numcodecs allocates that
    many before it reads one), its bytes otherwise as they were, compressed as the dump does."""
    from numcodecs.zstd import Zstd

    def craft(run: Path, ws: Path) -> None:
        raw = bytes(Zstd().decode((run / STORE / key).read_bytes()))
        crafted = count.to_bytes(4, "little") + raw[4:]
        (run / STORE / key).write_bytes(bytes(Zstd(level=0).encode(np.frombuffer(crafted, dtype=np.uint8))))

    return craft


def _compressed_then_bomb(size: int):
    """The run dumped again with zstd (as `dump --compressor zstd` writes it), then one of its chunks
    replaced by a bomb."""

    def craft(run: Path, ws: Path) -> None:
        shutil.rmtree(run / STORE)
        assert run_cli("--workspace", ws, "dump", run.name, "--compressor", "zstd") == 0
        _bomb(CHUNK, size)(run, ws)

    return craft


BYTES = {"name": "bytes", "configuration": {"endian": "little"}}

TRACEBACKS = [
    pytest.param(
        _array_meta("resid_mid", _set("codecs", [BYTES, {"name": "numcodecs.zlib", "configuration": {"level": 1}}])),
        r"its resid_mid array has codecs 'bytes', 'numcodecs.zlib', not the ones a dump writes",
        id="foreign codec",
    ),
    pytest.param(
        _array_meta("person", _set("shape", [10**12])),
        r"its person array has shape \[1000000000000\]: more than 16,777,216 people",
        id="person shape 1e12",
    ),
    pytest.param(
        _array_meta("person", _chunk_shape([0])),
        r"its person array has chunk grid .*chunk shape must be 1 positive whole numbers",
        id="chunk shape 0",
    ),
    pytest.param(
        _array_meta("label", _set("fill_value", "forty-two")),
        r"its label array has fill value 'forty-two', not 0",
        id="fill value not a number",
    ),
    pytest.param(
        _array_meta("label", _set("fill_value", 1e30)),
        r"its label array has fill value '1e\+30', not 0",
        id="fill value 1e30 on int32",
    ),
    pytest.param(
        lambda run, ws: _rewrite("label", _read(run, "label")[:, :15])(run, ws),
        r"its label array has shape \[6, 15\], not \[6, 16\]",
        id="label of the wrong length",
    ),
    pytest.param(
        _rewrite("written", np.ones((4, 3, 2), dtype=bool)),
        r"its written array has shape \[4, 3, 2\], not \[4, 3, 1\]",
        id="written of the wrong shape",
    ),
    pytest.param(_layers, r"its attribute layers is 1000000000: not a whole number from 1 to 4,096", id="layers 1e9"),
]
UNBOUNDED = [
    pytest.param(
        _array_meta("person", _set("shape", [10**8])),
        r"its person array has shape \[100000000\]: more than 16,777,216 people",
        id="person shape 1e8",
    ),
    # 1 GiB in 32 KiB: more bytes than a zstd chunk of 384 can take, refused by its size alone ...
    pytest.param(
        _bomb("label/c/0/0", 1 << 30),
        r"its file label/c/0/0 has more than the 1,411 bytes it may have",
        id="zstd bomb of 1 GiB in a label chunk",
    ),
    # ... and one that fits (32 MiB in 1 KiB; in a store of 4 MiB chunks, 1 GiB would fit): by its header.
    pytest.param(
        _bomb("label/c/0/0", 32 << 20),
        r"its chunk label/c/0/0 would decode to 33,554,432 bytes, not the 384 a chunk of label holds",
        id="zstd bomb of 32 MiB in a label chunk",
    ),
    pytest.param(
        _string_count("split/c/0", 1 << 30),
        r"its chunk split/c/0 says it holds 1073741824 strings, not the 16 a chunk of split holds",
        id="a string chunk that says it holds 2**30 strings",
    ),
    pytest.param(
        _compressed_then_bomb(32 << 20),
        rf"its chunk {CHUNK} would decode to 33,554,432 bytes, not the 2,048 a chunk of resid_mid holds",
        id="zstd bomb of 32 MiB in a resid_mid chunk",
    ),
]
SILENT = [
    pytest.param(
        _no_checksums_and_layers_swapped,
        r"has no checksum array, so its chunks cannot be checked; delete it and `factrecall-jobs dump RUN` "
        r"to dump it again",
        id="checksum removed, two layers swapped",
    ),
    pytest.param(
        _swap_split,
        r"is damaged \(its people, splits, labels or settings are not the ones it was dumped "
        r"with: .*\); delete the store and dump again",
        id="split swapped",
    ),
    pytest.param(
        _swap_split_and_forge,
        r"is not the store run tiny-stage\+mix-s0 dumped \(its fingerprint is \w+, "
        r"the run's \w+",
        id="split swapped, fingerprint forged",
    ),
    pytest.param(
        _edit_label, r"its people, splits, labels or settings are not the ones it was dumped with", id="label edited"
    ),
]


def _api(run: Path) -> None:
    """What a researcher does first: open the run's store and read a slice and its labels."""
    s = store.open(run)
    s.acts("qa", 1, "job", model="mix")
    s.labels("job")


def _refused_everywhere(tiny_run, tmp_path, craft, message) -> None:
    ws, run = _copy(tiny_run, tmp_path)
    craft(run, ws)
    for verb, argv in _verbs(ws, run).items():
        code, _, err = _cli(*argv)
        _refused(code, err, message, verb)
    assert not (ws / "OUT" / "x.h5").exists() and not (ws / "OUT" / "p.csv").exists()
    with _bounded(), pytest.raises(store.StoreError, match=message):
        _api(run)


@pytest.mark.parametrize("craft, message", TRACEBACKS)
def test_metadata_that_made_a_library_raise_is_one_line(tiny_run, tmp_path, craft, message):
    _refused_everywhere(tiny_run, tmp_path, craft, message)


@pytest.mark.parametrize("craft, message", UNBOUNDED)
def test_a_crafted_size_is_refused_before_it_is_allocated(tiny_run, tmp_path, craft, message):
    # The line quotes the declared size: it was read from the metadata or the zstd frame header, and
    # refused there, before zarr was asked for the array or numcodecs to decode the chunk.
    _refused_everywhere(tiny_run, tmp_path, craft, message)


@pytest.mark.parametrize("craft, message", SILENT)
def test_an_edit_that_gave_a_wrong_answer_is_refused(tiny_run, tmp_path, craft, message):
    _refused_everywhere(tiny_run, tmp_path, craft, message)


# -- 4. special files -----------------------------------------------------------------------------
def _fifo(key: str):
    def craft(run: Path) -> None:
        (run / STORE / key).unlink()
        os.mkfifo(run / STORE / key)

    return craft


def _device(key: str):
    def craft(run: Path) -> None:
        (run / STORE / key).unlink()
        try:
            os.mknod(run / STORE / key, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
        except PermissionError:
            pytest.skip("making a device node needs root")

    return craft


def _link(key: str):
    def craft(run: Path) -> None:
        outside = run.parent.parent / "outside.bin"
        outside.write_bytes((run / STORE / key).read_bytes())
        (run / STORE / key).unlink()
        (run / STORE / key).symlink_to(outside)

    return craft


def _socket(key: str):
    def craft(run: Path) -> None:
        (run / STORE / key).unlink()
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(run / STORE / key))
        except OSError as err:  # a path longer than a socket address holds
            pytest.skip(f"cannot bind a socket there: {err}")
        finally:
            sock.close()

    return craft


@pytest.mark.parametrize(
    "craft, message",
    [
        pytest.param(
            _fifo(CHUNK), rf"{CHUNK} is a FIFO \(named pipe\), not a file a dump writes", id="FIFO for a chunk"
        ),
        pytest.param(
            _fifo("person/zarr.json"),
            r"person/zarr.json is a FIFO \(named pipe\), not a file a dump writes",
            id="FIFO for person/zarr.json",
        ),
        pytest.param(
            _device(CHUNK), rf"{CHUNK} is a character device, not a file a dump writes", id="device for a chunk"
        ),
        pytest.param(
            _device("person/zarr.json"),
            r"person/zarr.json is a character device, not a file a dump writes",
            id="device for person/zarr.json",
        ),
        pytest.param(_link(CHUNK), rf"{CHUNK} is a symbolic link, not a file a dump writes", id="link for a chunk"),
        pytest.param(
            _socket("label/c/0/0"), r"label/c/0/0 is a socket, not a file a dump writes", id="socket for a chunk"
        ),
    ],
)
def test_a_special_file_in_the_store_is_refused_without_opening_it(tiny_run, tmp_path, craft, message):
    # A short workspace path: a socket's address holds about 100 characters.
    ws, run = _copy(tiny_run, Path(os.environ.get("TMPDIR", "/tmp")) / f"fr-{os.getpid()}-{tmp_path.name[-12:]}")
    try:
        craft(run)
        for verb, argv in _verbs(ws, run).items():
            code, _, err = _child(CLI_CHILD, *argv)
            _refused(code, err, message, verb)
        code, _, err = _child(API_CHILD, run)
        _refused(code, err, message)
    finally:
        shutil.rmtree(ws.parent, ignore_errors=True)


# -- 5. cached results ----------------------------------------------------------------------------
def _digest(entry: dict) -> str:
    """The digest a cache entry carries, as the issue defines it: sha256 of the canonical JSON of
    what is stored (every key but the digest)."""
    body = {k: v for k, v in entry.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _cache_verbs(ws: Path, run: Path, out: Path) -> dict[str, list]:
    out.mkdir(parents=True, exist_ok=True)
    return {
        "probes": [
            "--workspace",
            ws,
            "probe",
            run.name,
            "--attribute",
            "job",
            "--models",
            "mix",
            "--no-baseline",
            "--layers",
            "1",
            "--out",
            out / "p.png",
            "--csv",
            out / "probes.csv",
        ],
        "interventions": [
            "--workspace",
            ws,
            "patch",
            run.name,
            "--attribute",
            "job",
            "--models",
            "mix",
            "--layers",
            "1",
            "--out",
            out / "i.png",
            "--csv",
            out / "interventions.csv",
        ],
    }


def _tables(out: str) -> list[str]:
    """The numbers a verb printed: its tables' rows."""
    return [line for line in out.splitlines() if "│" in line]


@pytest.fixture(scope="module")
def cached_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run whose store caches a probe sweep and a patching result (of Mix at its
    last layer), and what the verbs printed and wrote computing them."""
    ws = tmp_path_factory.mktemp("cached")
    run = ws / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("probe-*.png", "patch-*.png"))
    reference = {}
    for group, argv in _cache_verbs(ws, run, ws / "reference").items():
        code, out, err = _cli(*argv, memory=False)
        assert code == 0, err
        reference[group] = (_tables(out), (ws / "reference" / f"{group}.csv").read_bytes())
    return run, reference


def _entries(run: Path, group: str) -> list[Path]:
    return sorted((run / STORE / group).glob("*/zarr.json"))


def _edit(change, redigest: bool = False):
    """Edit every cached entry's attributes; with `redigest`, as a forger would, with a digest that
    matches the edit."""

    def craft(path: Path) -> None:
        def edit(meta: dict) -> None:
            change(meta["attributes"])
            if redigest:
                meta["attributes"]["digest"] = _digest(meta["attributes"])

        _edit_json(path, edit)

    return craft


def _drop(key):
    return lambda attrs: attrs.pop(key, None)


def _row(column, value):
    return lambda attrs: attrs["rows"][0].update({column: value})


def _moved(column, by):
    """The first row's `column` moved by `by` (modulo 100: still a percentage, just not this one)."""
    return lambda attrs: attrs["rows"][0].update({column: (attrs["rows"][0][column] + by) % 100})


def _cut(attrs: dict) -> None:
    attrs["outcomes"] = [{c: v[:-1] for c, v in outcome.items()} for outcome in attrs["outcomes"]]


def _cut_correct(attrs: dict) -> None:
    attrs["rows"][0]["correct"]["acc_qa_wqa"] = attrs["rows"][0]["correct"]["acc_qa_wqa"][:-1]


def _outcome_flipped(attrs: dict) -> None:
    outcome = attrs["outcomes"][0]["qa"]
    outcome[0] = 1 - outcome[0]


@pytest.mark.parametrize(
    "group, craft",
    [
        pytest.param("interventions", _edit(_drop("outcomes")), id="interventions: outcomes removed"),
        pytest.param("interventions", _edit(_cut), id="interventions: outcomes cut"),
        pytest.param("interventions", _edit(_row("qa", 99.0)), id="interventions: qa 99.0"),
        pytest.param("interventions", _edit(_row("qa", 1e308)), id="interventions: qa 1e308"),
        pytest.param("interventions", _edit(_drop("digest")), id="interventions: from before digests"),
        pytest.param(
            "interventions", _edit(_row("qa", 99.0), redigest=True), id="interventions: qa 99.0, digest forged"
        ),
        pytest.param("interventions", _edit(_cut, redigest=True), id="interventions: outcomes cut, digest forged"),
        pytest.param(
            "interventions",
            _edit(_outcome_flipped, redigest=True),
            id="interventions: an outcome flipped, digest forged",
        ),
        pytest.param("probes", _edit(_drop("rows")), id="probes: rows removed"),
        pytest.param("probes", _edit(_row("acc_qa_wqa", 99.0)), id="probes: accuracy 99.0"),
        pytest.param("probes", _edit(_drop("digest")), id="probes: from before digests"),
        pytest.param(
            "probes", _edit(_row("acc_qa_wqa", 1e308), redigest=True), id="probes: accuracy 1e308, digest forged"
        ),
        pytest.param(
            "probes", _edit(_moved("delta_rep", 25.0), redigest=True), id="probes: delta_rep moved, digest forged"
        ),
        pytest.param("probes", _edit(_cut_correct, redigest=True), id="probes: outcomes cut, digest forged"),
    ],
)
def test_a_cached_result_that_is_not_as_written_is_computed_again(cached_run, tmp_path, group, craft):
    source, reference = cached_run
    ws = tmp_path / "ws"
    run = ws / "runs" / source.name
    shutil.copytree(source, run)
    entries = _entries(run, group)
    assert entries
    for entry in entries:
        craft(entry)
    argv = _cache_verbs(ws, run, tmp_path / "out")[group]
    code, out, err = _cli(*argv, memory=False)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    tables, csv = reference[group]
    assert _tables(out) == tables  # printed: the numbers of the store as dumped, computed again
    assert (tmp_path / "out" / f"{group}.csv").read_bytes() == csv
    assert "from the store's cache" not in out
    # ... and written back whole, with a digest that matches: the next request is served from it.
    s = store.open(run)
    for entry in _entries(run, group):
        attrs = json.loads(entry.read_text())["attributes"]
        assert attrs.get("digest") == _digest(attrs)
        key = entry.parent.name
        assert (probes._cached(s, key) if group == "probes" else interventions.cached(s, key)) is not None
