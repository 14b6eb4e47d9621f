"""Bad input: one clear line naming the problem and what to do, a non-zero exit, no traceback, and
nothing already written is touched."""

import json
import subprocess
import sys

import pytest

from tests.helpers import run_cli


def _cli(*argv, cwd):
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *map(str, argv)], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--preset", "tiny", "--people", "-5"], "argument --people: -5 is out of range: give 2 or more"),
        (["run", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "--preset", "tiny", "--strategy", "stagee"], "invalid choice: 'stagee'"),
        (["run", "--preset", "tiny", "--model", "/nonexistent/llama"], "no Hugging Face checkpoint there"),
        (["run", "--preset", "tiny", "--set", "train.mix.lr"], "write it as key=value"),
        (["run", "--preset", "tiny", "--set", "train.mix.speed=3"], "invalid setting train.mix.speed=3"),
        (["run", "--preset", "tiny", "--qa-in-fraction", "1.5"], "argument --qa-in-fraction: 1.5 is out of range"),
        (["run", "--preset", "tiny", "--config", "missing.toml"], "config file missing.toml does not exist"),
        (
            ["run", "--preset", "tiny", "--set", "train.bio.epochs=inf"],
            "train.bio.epochs=inf: Input should be a finite",
        ),
        (["run", "--preset", "tiny", "--set", 'data.locale="xx_XX"'], "faker has no locale 'xx_XX'"),
        (
            ["run", "--preset", "tiny", "--set", 'data.locale="de_DE"', "--strategy", "bio"],
            "de_DE locale cannot make state_abbr",
        ),
        (["--workspace", "/etc/passwd", "run", "--preset", "tiny"], "choose a writable --workspace"),
        (["show", "nope"], "no run 'nope'"),
        (["resume", "nope"], "no run 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, argv, message):
    code, out = _cli("--workspace", tmp_path, *argv, cwd=tmp_path)
    assert code != 0
    assert message in out
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) == 1, out


def test_a_run_folder_of_another_experiment_is_refused_and_left_intact(tiny_run, capsys):
    workspace = tiny_run.parent.parent
    before = {p: p.read_bytes() for p in tiny_run.rglob("*.json")}
    code = run_cli("--workspace", workspace, "run", "--preset", "tiny", "--name", tiny_run.name, "--people", "12")
    assert code == 2
    err = capsys.readouterr().err
    assert "holds a different experiment (data.people: 16 -> 12)" in err
    assert {p: p.read_bytes() for p in tiny_run.rglob("*.json")} == before


def test_a_run_made_by_an_earlier_preset_is_named_so_and_left_intact(tiny_run, capsys, monkeypatch):
    """A preset's settings change between versions (the cpu preset went from fp32 to bf16): the run
    its stock name already holds is refused as made by the earlier preset, with the setting that
    changed spelled out, and the two ways on; the folder is untouched and still resumes as made."""
    import jobs.run.spec

    workspace = tiny_run.parent.parent
    before = {p: p.read_bytes() for p in tiny_run.rglob("*.json")}
    stock = jobs.run.spec.load_preset

    def later(name):
        raw = stock(name)
        raw["train"]["precision"] = "bf16"
        return raw

    monkeypatch.setattr(jobs.run.spec, "load_preset", later)
    assert run_cli("--workspace", workspace, "run", "--preset", "tiny") == 2
    err = capsys.readouterr().err
    assert (
        f"run folder {tiny_run} was made by an earlier tiny preset (train.precision: 'fp32' -> 'bf16'); "
        f"`factrecall-jobs resume {tiny_run.name}` continues it as it was made"
    ) in err
    assert len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in tiny_run.rglob("*.json")} == before
    assert run_cli("--workspace", workspace, "resume", tiny_run.name) == 0
    assert json.loads((tiny_run / "spec.json").read_text())["train"]["precision"] == "fp32"


def test_a_run_in_use_is_refused(tiny_run, capsys):
    from jobs.run.folder import RunFolder

    with RunFolder.resume(tiny_run):
        assert run_cli("--workspace", tiny_run.parent.parent, "resume", tiny_run.name) == 2
    assert "is in use by pid" in capsys.readouterr().err


def test_a_full_disk_is_one_line_and_a_rerun_keeps_finished_steps(tmp_path, monkeypatch, capsys):
    import errno

    import jobs.run.files as rf

    real = rf.atomic_write_bytes

    def full_at_metrics(path, data):
        if path.name == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    argv = ["--workspace", tmp_path, "run", "--preset", "tiny", "--strategy", "bio", "--set", "train.bio.epochs=5"]
    monkeypatch.setattr(rf, "atomic_write_bytes", full_at_metrics)
    assert run_cli(*argv) == 1
    err = capsys.readouterr().err
    assert "disk full writing" in err and "metrics.json" in err and len(err.strip().splitlines()) == 1
    run = next((tmp_path / "runs").iterdir())
    data_done = (run / "done" / "data.json").read_text()
    assert not (run / "metrics.json").exists()
    monkeypatch.setattr(rf, "atomic_write_bytes", real)
    assert run_cli(*argv) == 0
    assert (run / "done" / "data.json").read_text() == data_done  # not redone
    assert "bio" in json.loads((run / "metrics.json").read_text())
