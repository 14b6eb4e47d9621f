"""What a careless or hostile collaborator hands over: a workspace whose folders are links out of it, a
run folder or study folder whose files carry terminal escapes, caches and manifests with impossible
values, archives that lie about their size, two `reproduce` of one study, an ASCII-only terminal, an
account without a home, and a `cancel` that lands while a job cannot hear it. Each test is one class
of mishap and drives the CLI as a user would; each case is one example of its class
(docs/reliability.md lists the promises beside these tests)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from factrecall_tui.runs import read_run
from tests.guards import bounded
from tests.helpers import run_cli, wait_until

RUN = "tiny-stage+mix-s0"
# What a crafted file puts where a name or a message is printed: rewrite the window's title (OSC 0),
# write the clipboard (OSC 52), clear the screen (CSI 2J), and a C1 CSI some terminals act on.
PAYLOAD = "x\x1b]0;PWNED\x07\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b2J"


@pytest.fixture
def ws(tiny_run, tmp_path) -> Path:
    """A workspace holding a copy of the finished tiny run (Stage and Mix, with its store)."""
    shutil.copytree(tiny_run, tmp_path / "ws" / "runs" / RUN)
    return tmp_path / "ws"


def said(capsys, *argv) -> tuple[int, str]:
    """Run the CLI; returns its exit code and everything it printed (stdout and stderr)."""
    capsys.readouterr()
    code = run_cli(*argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def one_line(capsys, *argv) -> str:
    """Run the CLI; it must refuse in one line with exit 2. Returns the line."""
    code, text = said(capsys, *argv)
    text = text.strip()
    assert code == 2 and len(text.splitlines()) == 1 and "Traceback" not in text, (code, text)
    return text


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under `root` with its bytes (a link as where it points): what must not change."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[str(p)] = p.read_bytes()
    return out


# -- 1. every folder the product writes into is checked as run folders are -------------------------
def _gguf(tmp_path: Path) -> Path:
    from tests.jobs.tiny_gguf import byte_level_bpe, tiny_llama, write_gguf

    tok = byte_level_bpe()
    return write_gguf(tmp_path / "tiny.gguf", tiny_llama(tok.get_vocab_size()), tok)


# workspace folder made a link out of the workspace -> the verb that writes there
WRITERS = {
    "runs": ["run", "--preset", "tiny", "--strategy", "bio", "--no-dump", "--name", "new"],
    "reproduce": ["reproduce", "--preset", "tiny", "--seeds", "0", "--snapshots", "0"],
    "reproduce/tiny": ["reproduce", "--preset", "tiny", "--seeds", "0", "--snapshots", "0"],
    "archive": ["archive", RUN],
    "models": ["models", "import", "GGUF"],
    "queue": ["submit", "--preset", "tiny", "--strategy", "bio", "--name", "queued"],
    "queue/slurm": ["submit", "--executor", "slurm", "--preset", "tiny", "--strategy", "bio", "--name", "queued"],
}


@pytest.mark.parametrize("folder", list(WRITERS))
def test_a_workspace_folder_that_is_a_link_out_is_refused_and_the_users_files_stay(
    folder, ws, tmp_path, capsys, monkeypatch
):
    """A study folder linked to a user's own folder once had every study file written there, their
    report.md and plan.json replaced while the CLI printed the workspace's path."""
    monkeypatch.setenv("FACTRECALL_SUBMITIT_CLUSTER", "local")
    if folder == "runs":  # the copied run moves away: the link replaces runs/
        shutil.rmtree(ws / "runs")
    outside = tmp_path / "users-own"
    outside.mkdir()
    (outside / "report.md").write_text("my notes\n")
    (outside / "plan.json").write_text('{"mine": true}\n')
    (outside / "new").mkdir()  # a folder named like what the verb would make there
    link = ws / folder
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    argv = [str(_gguf(tmp_path)) if a == "GGUF" else a for a in WRITERS[folder]]
    line = one_line(capsys, "--workspace", ws, *argv)
    assert "symbolic link" in line and folder.split("/")[-1] in line, line
    assert tree(outside) == before  # nothing written, replaced or removed there
    if folder != "runs":  # (there, runs/ is the link itself)
        assert not (ws / "runs" / "new").exists() and not (ws / "runs" / "queued").exists()  # nothing made here


def test_phase_reuse_never_takes_a_run_linked_in_from_outside(tiny_run, tmp_path, capsys):
    """`runs/outlink -> OUTSIDE/runs/x` once made `run --strategy mix` adopt the outside run's weights
    (`mix (from outlink)`, a hard link to the outside file)."""
    outside = tmp_path / "outside" / "x"
    shutil.copytree(tiny_run, outside)
    ws = tmp_path / "ws"
    (ws / "runs").mkdir(parents=True)
    (ws / "runs" / "outlink").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    assert run_cli("--workspace", ws, "run", "--preset", "tiny", "--strategy", "mix", "--name", "rm", "--no-dump") == 0
    done = json.loads((ws / "runs" / "rm" / "done" / "train-mix.json").read_text())
    assert "reused_from" not in done  # trained here
    mine = ws / "runs" / "rm" / "checkpoints" / "mix" / "final" / "model.safetensors"
    theirs = outside / "checkpoints" / "mix" / "final" / "model.safetensors"
    assert not os.path.samefile(mine, theirs)
    assert tree(outside) == before
    # A real run folder beside it is still reused: the rule is about links, not about reuse.
    shutil.copytree(tiny_run, ws / "runs" / "beside")
    assert run_cli("--workspace", ws, "run", "--preset", "tiny", "--strategy", "mix", "--name", "rm2", "--no-dump") == 0
    assert json.loads((ws / "runs" / "rm2" / "done" / "train-mix.json").read_text()).get("reused_from") == "beside"


def _device(path: Path, major: int = 1, minor: int = 3) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")


@pytest.mark.parametrize("kind", ["device", "fifo", "link"])
@pytest.mark.parametrize("verb", ["export", "probe"])
def test_force_replaces_only_a_regular_file(kind, verb, ws, tmp_path, capsys):
    """`--hdf5 dev.h5 --force` once replaced a device node by a regular file (as root, `--hdf5 /dev/null
    --force` would have replaced the system's /dev/null)."""
    target = tmp_path / "out.bin"
    if kind == "device":
        _device(target)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        (tmp_path / "theirs.csv").write_text("run,model,layer,someone's\n")
        target.symlink_to(tmp_path / "theirs.csv")
    mode = target.lstat().st_mode
    argv = (
        ["export", RUN, "--hdf5", target]
        if verb == "export"
        else ["probe", RUN, "--attribute", "job", "--layers", "0", "--csv", target]
    )
    line = one_line(capsys, "--workspace", ws, *argv, "--force")
    assert "not a file" in line and "regular file" in line, line
    assert target.lstat().st_mode == mode  # still the node, the FIFO, the link
    if kind == "link":
        assert (tmp_path / "theirs.csv").read_text() == "run,model,layer,someone's\n"


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_an_output_path_that_is_a_special_file_is_refused_without_reading_it(kind, ws, tmp_path, capsys):
    """`export --hdf5 FIFO` once blocked for ever, reading the FIFO's first 16 bytes to see whether it
    was an HDF5 file factrecall wrote."""
    target = tmp_path / "out.h5"
    _device(target) if kind == "device" else os.mkfifo(target)
    with bounded(f"export onto a {kind}"):
        line = one_line(capsys, "--workspace", ws, "export", RUN, "--hdf5", target)
    assert "not a file" in line, line


@pytest.mark.parametrize(
    "manifest",
    ["no source.file", "check.gap a string", "parameters a string", "source a list", "sha256 not a digest", "a list"],
)
def test_a_crafted_manifest_is_listed_as_damaged(manifest, tmp_path, capsys):
    """`models list` over a manifest lacking `source.file`, or with `check.gap` a string, was a
    KeyError or a ValueError traceback."""
    ws = tmp_path / "ws"
    folder = ws / "models" / "m"
    folder.mkdir(parents=True)
    m = {
        "source": {"file": "m.gguf", "bytes": 1, "sha256": "0" * 64},
        "parameters": 1000,
        "config": {"num_hidden_layers": 2},
        "check": {"gap": 12.0, "passed": True},
    }
    if manifest == "no source.file":
        del m["source"]["file"]
    elif manifest == "check.gap a string":
        m["check"]["gap"] = "huge"
    elif manifest == "parameters a string":
        m["parameters"] = "many"
    elif manifest == "source a list":
        m["source"] = ["m.gguf"]
    elif manifest == "sha256 not a digest":
        m["source"]["sha256"] = "\x1b]0;PWNED"
    else:
        m = [m]
    (folder / "factrecall-import.json").write_text(json.dumps(m))
    code, text = said(capsys, "--workspace", ws, "models", "list")
    assert code == 0 and "Traceback" not in text and "cannot be read" in " ".join(text.replace("│", " ").split()), text


# -- 2. one output sanitizer: nothing from a file or a flag reaches the terminal raw ------------------
def _crafted_preset(ws: Path) -> None:
    """A second run whose spec.json names a crafted preset: `compare` shows the differing preset."""
    shutil.copytree(ws / "runs" / RUN, ws / "runs" / "other")
    spec = ws / "runs" / "other" / "spec.json"
    spec.write_text(spec.read_text().replace('"preset": "tiny"', f'"preset": {json.dumps(PAYLOAD)}'))


def _crafted_queue_name(ws: Path) -> None:
    (ws / "queue").mkdir(parents=True, exist_ok=True)
    (ws / "queue" / f"1-{PAYLOAD}.json").write_text(json.dumps({"run": PAYLOAD, "time": 1.0}))


def _crafted_study_progress(ws: Path) -> None:
    (ws / "queue").mkdir(parents=True, exist_ok=True)
    (ws / "queue" / "1-study:tiny.json").write_text(json.dumps({"study": "tiny", "argv": [], "time": 1.0}))
    (ws / "reproduce" / "tiny").mkdir(parents=True)
    (ws / "reproduce" / "tiny" / "progress.json").write_text(
        json.dumps({"step": "runs", "runs_done": 0, "runs_total": 1, "current": PAYLOAD})
    )


def _crafted_store_model(ws: Path) -> None:
    """A model renamed in the store's attributes and its `model` array alike (so the two agree)."""
    import zarr

    url = ws / "runs" / RUN / "activations.zarr"
    group = zarr.open_group(str(url), mode="r+", use_consolidated=False)
    names = list(group["model"][...])
    group["model"][...] = [PAYLOAD, *names[1:]]
    meta = url / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"]["factrecall"]["models"][0] = PAYLOAD
    data.pop("consolidated_metadata", None)
    meta.write_text(json.dumps(data))


def _crafted_config(ws: Path) -> None:
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "c.toml").write_text(f"[model]\npath = {json.dumps(PAYLOAD)}\n")


def _crafted_manifest(ws: Path) -> None:
    folder = ws / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "factrecall-import.json").write_text(
        json.dumps(
            {
                "source": {"file": PAYLOAD, "bytes": 1, "sha256": "0" * 64, "quantization": PAYLOAD},
                "parameters": 1000,
                "config": {"num_hidden_layers": 2},
                "check": {"gap": 12.0, "passed": True},
            }
        )
    )


# where the crafted text is -> (how it is planted, the verbs that print it)
PRINTED = {
    "a spec.json's preset": (_crafted_preset, [["compare"], ["compare", "--markdown"], ["show", RUN]]),
    "a queue file's name": (_crafted_queue_name, [["status"]]),
    "a study's progress.json": (_crafted_study_progress, [["status"]]),
    "a store's model name": (_crafted_store_model, [["export", RUN, "--hdf5", "OUT.h5"], ["probe", RUN]]),
    "a config file's model.path": (_crafted_config, [["run", "--preset", "tiny", "--config", "c.toml"]]),
    "a manifest's source file": (_crafted_manifest, [["models", "list"]]),
    "a flag's value": (
        lambda ws: None,
        [["show", PAYLOAD], ["run", "--preset", PAYLOAD], ["probe", RUN, "--attribute", PAYLOAD]],
    ),
}
PRINT_CASES = [(where, argv) for where, (_, verbs) in PRINTED.items() for argv in verbs]


@pytest.mark.parametrize(("where", "argv"), PRINT_CASES, ids=[f"{w}: {' '.join(a)}" for w, a in PRINT_CASES])
def test_no_control_character_from_a_file_or_a_flag_reaches_the_terminal(where, argv, ws, capsys, monkeypatch):
    """A window title and the clipboard were rewritten through spec.json, a queue file, a store, a
    manifest and a config file; every string printed now comes out with its control characters
    visible (`\\x1b`), whatever printed it."""
    monkeypatch.chdir(ws)
    PRINTED[where][0](ws)
    code, text = said(capsys, "--workspace", ws, *[str(ws / a) if a == "OUT.h5" else a for a in argv])
    assert "Traceback" not in text
    assert code in (0, 2), text
    assert not any(c in text for c in "\x1b\x07\x9b"), repr(text)
    if code == 2:
        assert len(text.strip().splitlines()) == 1, text


def test_text_from_a_file_is_never_taken_for_markup(ws, capsys):
    """A path or a recorded error holding `[/]` or `[red]` is printed as it is (Rich would have parsed
    it, and `[/]` with nothing open is an error of its own)."""
    for name in ("a[/]b.toml", "[red]c[/red].toml", "[bold"):
        line = one_line(capsys, "--workspace", ws, "run", "--preset", "tiny", "--config", name)
        assert name in line, line


def test_a_run_folder_name_that_factrecall_would_not_write_is_not_listed(ws, capsys):
    crafted = ws / "runs" / PAYLOAD
    shutil.copytree(ws / "runs" / RUN, crafted)
    code, text = said(capsys, "--workspace", ws, "compare")
    assert code == 0 and "\x1b" not in text and "PWNED" not in text


# -- 5. per-user caches are advice -----------------------------------------------------------------
DRY = ("reproduce", "--preset", "tiny", "--seeds", "0", "--snapshots", "0", "--dry-run")


def _gemm(rates) -> str:
    return json.dumps({"version": 1, "rates": rates})


@pytest.mark.parametrize(
    "record", ["every rate 1e30", "every rate 1e999", "every rate 1e-30", "rates a list", "a string", "not JSON"]
)
def test_an_implausible_gemm_record_is_dropped_said_and_measured_again(record, tmp_path, capsys):
    """A record of 1e30 FLOP/s made the plan say `0.0 min training ... 7.6e+20 GFLOP/s`, and was never
    replaced; 1e999 and a list were tracebacks."""
    ws = tmp_path / "ws"
    assert run_cli("--workspace", ws, *DRY) == 0  # a first plan records this machine's rates
    file = Path(os.environ["XDG_CACHE_HOME"]) / "factrecall" / "gemm.json"
    real = json.loads(file.read_text())["rates"]
    crafted = {
        "every rate 1e30": _gemm({k: 1e30 for k in real}),
        "every rate 1e999": _gemm({k: 1e30 for k in real}).replace("1e+30", "1e999"),
        "every rate 1e-30": _gemm({k: 1e-30 for k in real}),
        "rates a list": _gemm(list(real)),
        "a string": '"fast"',
        "not JSON": "{fast",
    }[record]
    file.write_text(crafted)
    code, text = said(capsys, "--workspace", ws, *DRY)
    assert code == 0 and "Traceback" not in text, text
    assert "note:" in text and str(file) in text.replace("\n", ""), text
    kept = json.loads(file.read_text())["rates"]
    assert set(kept) == set(real) and all(1e6 < v < 1e13 for v in kept.values())  # measured again, rewritten


def test_a_cache_folder_that_is_a_link_is_not_written_through(tmp_path, capsys):
    ws = tmp_path / "ws"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "factrecall"
    shutil.rmtree(cache, ignore_errors=True)
    cache.symlink_to(outside, target_is_directory=True)
    code, text = said(capsys, "--workspace", ws, *DRY)
    assert code == 0 and "symbolic link" in text and list(outside.iterdir()) == []


# -- 6. archives are checked before they are extracted ---------------------------------------------
def _lying_zip(path: Path, declared: int) -> Path:
    """A wheel whose one .gguf member declares `declared` bytes in the archive's central directory."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("llm_x/model.gguf", b"GGUF" + b"\0" * 4096)
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared)  # the uncompressed size, as zipfile reads it
    path.write_bytes(bytes(data))
    return path


def test_an_archive_member_declaring_more_than_any_model_is_not_extracted(tmp_path, capsys):
    """A 2 MB wheel whose member declared 2.15 GB was extracted in full before any check."""
    wheel = _lying_zip(tmp_path / "llm_x-0.1-py3-none-any.whl", 0xFFFF_FFF0)
    import jobs.models

    real = jobs.models.MAX_GGUF_BYTES
    try:
        jobs.models.MAX_GGUF_BYTES = 1 << 30
        line = one_line(capsys, "--workspace", tmp_path / "ws", "models", "import", wheel)
    finally:
        jobs.models.MAX_GGUF_BYTES = real
    assert "declares 4.0 GiB" in line and "not extracted" in line, line
    assert not any(p.name.endswith(".gguf") for p in (tmp_path / "ws").rglob("*"))


def test_an_archive_member_larger_than_the_free_disk_is_not_extracted(tmp_path, capsys, monkeypatch):
    wheel = _lying_zip(tmp_path / "llm_x-0.1-py3-none-any.whl", 3 << 30)
    import jobs.models

    monkeypatch.setattr(
        jobs.models.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 9 << 30, 1 << 30)
    )
    line = one_line(capsys, "--workspace", tmp_path / "ws", "models", "import", wheel)
    assert "declares 3 GiB" in line and "1 GiB free" in line, line


def test_a_full_disk_during_an_import_names_what_was_written(tmp_path, capsys, monkeypatch):
    """It said "disk full writing the run folder", though no run folder is involved."""
    import errno

    import jobs.models

    def full(read, to):
        raise OSError(errno.ENOSPC, "No space left on device", str(to))

    monkeypatch.setattr(jobs.models, "_sha256_copy", full)
    wheel = _lying_zip(tmp_path / "llm_x-0.1-py3-none-any.whl", 4100)
    code, text = said(capsys, "--workspace", tmp_path / "ws", "models", "import", wheel)
    assert code == 1 and "disk full writing" in text and "model.gguf" in text and "run folder" not in text, text


# -- 7. a study takes a lock as a run does ---------------------------------------------------------
def test_a_second_reproduce_of_the_same_study_is_refused_in_one_line(tmp_path, capsys):
    """Two `reproduce` of one study both went ahead, fitting the same probes side by side."""
    from jobs.run.files import hold_lock, take_lock

    ws = tmp_path / "ws"
    folder = ws / "reproduce" / "tiny"
    folder.mkdir(parents=True)
    fd = take_lock(folder / "study.lock", "study tiny")  # the first reproduce, holding its study
    hold_lock(fd)
    try:
        line = one_line(capsys, "--workspace", ws, "reproduce", "--preset", "tiny", "--seeds", "0", "--snapshots", "0")
    finally:
        os.close(fd)
    assert f"study tiny is in use by pid {os.getpid()}" in line, line
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())  # no run begun


# -- 8. odd environments -----------------------------------------------------------------------------
def test_output_works_with_an_ascii_only_stdout(tiny_run):
    """`show` with LC_ALL=C ended in a UnicodeEncodeError over the `·` in a title."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENCODING"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    for argv, shown in ((["show", tiny_run.name], b"Stage"), (["compare"], b"exact match"), (["presets"], b"tiny")):
        done = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "--workspace", str(tiny_run.parent.parent), *argv],
            capture_output=True,
            env=env,
        )
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
        assert done.stdout.isascii() and shown in done.stdout, done.stdout


def test_without_a_home_nothing_is_written_under_the_root(tiny_run, tmp_path):
    """With HOME empty and no XDG folders, the GEMM record went to the account's home from the password
    database and matplotlib made /.cache/matplotlib."""

    def snapshot() -> dict[str, int]:
        places = [Path("/"), Path("/.cache"), Path(os.path.expanduser("~" + pwd_name)) / ".cache"]
        return {
            str(p): p.stat().st_mtime_ns
            for place in places
            if place.is_dir()
            for p in [place, *place.iterdir()]
            if p != Path("/tmp")
        }  # (where the tests and matplotlib's temporary folder live)

    import pwd

    pwd_name = pwd.getpwuid(os.getuid()).pw_name
    before = snapshot()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_") and k not in ("HOME", "MPLCONFIGDIR")}
    env["HOME"] = ""
    for argv in (
        ["reproduce", "--preset", "tiny", "--seeds", "0", "--dry-run"],
        ["plot", tiny_run.name, "--out", "c.png"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "--workspace", str(tiny_run.parent.parent), *argv],
            capture_output=True,
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (tmp_path / "c.png").is_file()
    assert snapshot() == before  # nothing made or touched in /, /.cache, or the account's ~/.cache


# -- a stop request is heard whenever it arrives -----------------------------------------------------
def test_cancel_stops_a_job_that_cannot_hear_sigint_at_any_machine_speed(tmp_path):
    """`cancel` landed before the job had restored SIGINT (a loaded machine) and was lost: the job ran
    to its end. Here the job cannot hear SIGINT at all (blocked from before it starts, inherited by the
    worker and the job), so only a request that is recorded and honoured at the job's next step or
    progress report stops it, at any speed of the machine and at any moment the cancel lands."""
    ws = tmp_path / "ws"
    blocked = lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # noqa: E731
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "--workspace",
            str(ws),
            "submit",
            "--preset",
            "tiny",
            "--people",
            "1500",
            "--strategy",
            "bio",
            "--no-dump",
            "--name",
            "deaf",
        ],
        check=True,
        preexec_fn=blocked,
        capture_output=True,
    )
    run = ws / "runs" / "deaf"
    wait_until(lambda: read_run(run).status == "running", "the job to start")
    assert run_cli("--workspace", ws, "cancel", "deaf") == 0
    wait_until(lambda: read_run(run).status in ("interrupted", "done", "failed"), "the job to end")
    assert read_run(run).status == "interrupted"
    assert "train-bio" not in read_run(run).steps_done
    assert not (run / "stop.json").exists()  # the request is gone with the job it stopped
