"""Mishaps that need a real run folder: a planted link, a lost or foreign file, an edited spec, an odd
events line, a full disk, a job that ignores SIGINT, a probe with too few people. Each ends in one
line and exit 2, or in a repair that gives back the very run. (Bad input alone is a row of
tests/jobs/test_bad_input.py; every damaged file under every verb is tests/jobs/test_damaged_files.py.)"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import store
from factrecall_tui.runs import Scanner, read_run
from jobs.run.events import read_events
from jobs.run.folder import read_metrics
from tests.helpers import metrics, run_cli, wait_until

RUN = "tiny-stage+mix-s0"


@pytest.fixture
def ws(tiny_run, tmp_path) -> Path:
    """A workspace holding a copy of the finished tiny run (Stage and Mix, with its store)."""
    shutil.copytree(tiny_run, tmp_path / "ws" / "runs" / RUN)
    return tmp_path / "ws"


def refused(capsys, *argv) -> str:
    """Run the CLI; it must refuse in one line with exit 2. Returns the line."""
    capsys.readouterr()
    code = run_cli(*argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (code, err)
    return err


def evaluations(m: dict) -> dict:
    return {
        k: {s: v[s] for s in ("bio", "qa_in", "qa_out")}
        for k, v in m.items()
        if k in ("untrained", "bio", "stage", "mix")
    }


# -- no symbolic link is followed out of a run folder ----------------------------------------------
@pytest.mark.parametrize("name", ["run.lock", "events.jsonl", "log.txt", "data", "checkpoints/mix"])
def test_a_planted_link_never_leads_a_write_out_of_the_run(ws, tmp_path, capsys, name):
    victim = tmp_path / "precious"
    if name in ("data", "checkpoints/mix"):
        shutil.copytree(ws / "runs" / RUN / name, victim)
        shutil.rmtree(ws / "runs" / RUN / name)
        before = {p: p.read_bytes() for p in victim.rglob("*") if p.is_file()}
    else:
        victim.write_text("precious data outside the workspace")
        (ws / "runs" / RUN / name).unlink(missing_ok=True)
        before = {victim: victim.read_bytes()}
    (ws / "runs" / RUN / name).symlink_to(victim)
    err = refused(capsys, "--workspace", ws, "resume", RUN)
    assert f"{name} is a symbolic link" in err and "never writes through one" in err
    assert {p: p.read_bytes() for p in before} == before


# -- a lost metrics.json, or a lost checkpoint, is rebuilt on resume -------------------------------
def test_a_lost_metrics_json_is_rebuilt_from_the_done_markers(ws, tiny_run):
    run = ws / "runs" / RUN
    (run / "metrics.json").unlink()
    assert run_cli("--workspace", ws, "resume", RUN) == 0
    assert evaluations(metrics(run)) == evaluations(metrics(tiny_run))
    assert metrics(run)["train"]["mix"]["curve"] == metrics(tiny_run)["train"]["mix"]["curve"]
    assert run_cli("--workspace", ws, "show", RUN) == 0


def test_an_evaluation_missing_from_metrics_of_an_older_run_is_evaluated_again(ws, tiny_run):
    """A run made before done markers held their results: its marker says eval-mix is done, but
    metrics.json lost Mix's numbers; resume evaluates Mix again (and only that)."""
    run = ws / "runs" / RUN
    marker = json.loads((run / "done" / "eval-mix.json").read_text())
    marker.pop("metrics")
    (run / "done" / "eval-mix.json").write_text(json.dumps(marker))
    m = metrics(run)
    m.pop("mix")
    (run / "metrics.json").write_text(json.dumps(m))
    assert run_cli("--workspace", ws, "resume", RUN) == 0
    assert evaluations(metrics(run)) == evaluations(metrics(tiny_run))
    redone = [e["step"] for e in read_events(run) if e.get("status") == "redo"]
    assert redone == ["eval-mix"]


def test_a_lost_final_checkpoint_is_trained_again_to_the_same_weights(ws, tiny_run):
    run = ws / "runs" / RUN
    shutil.rmtree(run / "checkpoints" / "mix" / "final")
    assert run_cli("--workspace", ws, "resume", RUN) == 0
    a = load_file(tiny_run / "checkpoints" / "mix" / "final" / "model.safetensors")
    b = load_file(run / "checkpoints" / "mix" / "final" / "model.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert evaluations(metrics(run)) == evaluations(metrics(tiny_run))
    assert [e["step"] for e in read_events(run) if e.get("status") == "redo"] == ["train-mix"]


# -- cancel stops a job that inherited SIGINT ignored ----------------------------------------------
def test_cancel_stops_a_job_started_with_sigint_ignored(tmp_path, capsys):
    """`submit ... &` in a script: the worker and its job inherit SIGINT ignored; cancel must still
    stop the job (it did not: the job ran to the end)."""
    ws = tmp_path / "ws"
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
            "ignored",
        ],
        check=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        capture_output=True,
    )
    run = ws / "runs" / "ignored"
    wait_until(
        lambda: any(e["kind"] == "start" and e["step"] == "tokenizer" for e in read_events(run)),
        "the job to reach its tokenizer step (seconds at 1,500 people)",
        every=0.01,
    )
    assert run_cli("--workspace", ws, "cancel", "ignored") == 0
    wait_until(lambda: read_run(run).status in ("interrupted", "done"), "the job to end")
    assert read_run(run).status == "interrupted"
    assert "train-bio" not in read_run(run).steps_done


# -- a file from elsewhere is found by its content -------------------------------------------------
def test_weights_from_another_phase_are_refused_where_they_are_read(ws, capsys):
    run = ws / "runs" / RUN
    shutil.copy(
        run / "checkpoints" / "stage" / "final" / "model.safetensors",
        run / "checkpoints" / "mix" / "final" / "model.safetensors",
    )
    for argv in (["resume", RUN], ["dump", RUN, "--out", ws / "x.zarr"]):
        err = refused(capsys, "--workspace", ws, *argv)
        assert "checkpoints/mix/final/model.safetensors is not the file train-mix wrote" in err
    assert not (ws / "x.zarr").exists()


def _interrupted_mix(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A Mix run stopped by Ctrl-C at step 60 of its phase: its checkpoints/mix/last holds step 60."""
    import jobs.run.train as train

    real = train.save_checkpoint
    calls = []

    def stop_after_60(folder, model, opt, state):
        real(folder, model, opt, state)
        calls.append(state["step"])
        if state["step"] >= 60:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", stop_after_60)
    ws = tmp_path / "ws"
    assert (
        run_cli(
            "--workspace",
            ws,
            "run",
            "--preset",
            "tiny",
            "--strategy",
            "mix",
            "--no-dump",
            "--name",
            "cut",
            "--set",
            "train.checkpoint_every=20",
        )
        == 130
    )
    monkeypatch.setattr(train, "save_checkpoint", real)
    return ws, ws / "runs" / "cut" / "checkpoints" / "mix" / "last"


def test_a_resumable_checkpoint_with_foreign_weights_is_refused(tmp_path, monkeypatch, capsys):
    ws, last = _interrupted_mix(tmp_path, monkeypatch)
    weights = load_file(last / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, last / "model.safetensors")  # another model's weights
    err = refused(capsys, "--workspace", ws, "resume", "cut")
    assert "model.safetensors is not the file this checkpoint wrote" in err and f"delete {last}" in err


def test_a_checkpoint_past_its_end_is_refused_not_marked_done(tmp_path, monkeypatch, capsys):
    ws, last = _interrupted_mix(tmp_path, monkeypatch)
    state = json.loads((last / "state.json").read_text())
    (last / "state.json").write_text(json.dumps({**state, "step": state["total"] + 5}))
    err = refused(capsys, "--workspace", ws, "resume", "cut")
    assert f"state.json says step {state['total'] + 5} of {state['total']}" in err
    assert not (ws / "runs" / "cut" / "done" / "train-mix.json").exists()
    shutil.rmtree(last)  # as the line says: the phase trains from its start
    assert run_cli("--workspace", ws, "resume", "cut") == 0


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, monkeypatch):
    """A swap of checkpoints cut short leaves last.old; a damaged last then resumes from it."""
    ws, last = _interrupted_mix(tmp_path, monkeypatch)
    shutil.copytree(last, last.with_name("last.old"))
    (last / "optimizer.safetensors").write_bytes(b"cut")
    assert run_cli("--workspace", ws, "resume", "cut") == 0
    assert read_metrics(ws / "runs" / "cut")["train"]["mix"]["steps"] > 60


@pytest.mark.parametrize("edit", ["chunk of another layer", "models reordered", "another run's store"])
def test_a_store_that_is_not_the_runs_is_refused_by_every_reader(ws, tiny_run, tmp_path, capsys, edit):
    s = ws / "runs" / RUN / "activations.zarr"
    if edit == "chunk of another layer":
        shutil.copy(s / "resid_mid/c/3/2/0/3/0/0", s / "resid_mid/c/3/2/1/3/0/0")
        says = "chunk of model mix, format qa, layer 1, attribute job, block 0 is not the one the dump wrote"
    elif edit == "models reordered":
        meta = json.loads((s / "zarr.json").read_text())
        models = meta["attributes"]["factrecall"]["models"]
        models[2], models[3] = models[3], models[2]
        (s / "zarr.json").write_text(json.dumps(meta))
        says = "its attributes list models"
    else:
        other = tmp_path / "other"
        assert run_cli("--workspace", other, "run", "--preset", "tiny", "--seed", "1") == 0
        shutil.rmtree(s)
        shutil.copytree(other / "runs" / "tiny-stage+mix-s1" / "activations.zarr", s)
        says = f"is not the store run {RUN} dumped"
    for argv in (["probe", RUN, "--attribute", "job", "--no-cache"], ["export", RUN, "--hdf5", tmp_path / "x.h5"]):
        assert says in refused(capsys, "--workspace", ws, *argv)
    with pytest.raises(store.StoreError, match=re.escape(says.split(" (")[0][:40])):
        store.open(ws / "runs" / RUN).acts("qa", 1, "job", model="mix")


def test_a_spec_edited_after_the_run_began_is_refused(ws, capsys):
    spec = json.loads((ws / "runs" / RUN / "spec.json").read_text())
    spec["data"]["people"] = 12
    (ws / "runs" / RUN / "spec.json").write_text(json.dumps(spec))
    for argv in (["resume", RUN], ["dump", RUN, "--out", ws / "x.zarr"]):
        assert "spec.json was changed after the run began (data.people: 16 -> 12)" in refused(
            capsys, "--workspace", ws, *argv
        )


# -- odd lines in events.jsonl hide nothing --------------------------------------------------------
@pytest.mark.parametrize("line", ["[]", '{"kind": "run", "status": 5}', '"text"', '{"kind": 3}', "{"])
def test_an_odd_events_line_hides_no_run_and_no_status(ws, line):
    with (ws / "runs" / RUN / "events.jsonl").open("a") as f:
        f.write(line + "\n")
    (seen,) = Scanner(ws).scan()
    assert seen.name == RUN and seen.status == "done"


def test_the_store_preview_says_a_chunk_is_missing(ws):
    from factrecall_tui.store_browse import read_preview, walk_store

    s = ws / "runs" / RUN / "activations.zarr"
    shutil.rmtree(s / "resid_mid/c/3/2/1")  # every chunk of mix, qa, layer 1
    nodes, _ = walk_store(s)
    resid = next(n for n in nodes if n.path == "resid_mid")
    preview, _ = read_preview(s, resid, [3, 2, 1, 3, range(0, 4), range(0, 4)])
    assert "a chunk missing or damaged" in preview.note


# -- outputs: refused before they cannot fit, a full disk named, written where the line says ---------
def test_an_export_that_cannot_fit_the_disk_is_refused_before_writing(ws, tmp_path, monkeypatch, capsys):
    import jobs.run.budget

    monkeypatch.setattr(jobs.run.budget, "free_disk", lambda where: 1000)
    assert "the export needs about" in refused(capsys, "--workspace", ws, "export", RUN, "--hdf5", tmp_path / "x.h5")
    assert not list(tmp_path.glob("*x.h5*"))


def test_a_full_disk_names_the_file_being_written(ws, tmp_path, monkeypatch, capsys):
    import errno

    import store.hdf5

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.hdf5, "export_hdf5", full)
    capsys.readouterr()
    assert run_cli("--workspace", ws, "export", RUN, "--hdf5", tmp_path / "x.h5") == 1
    assert f"disk full writing {tmp_path / 'x.h5'}" in capsys.readouterr().err


def test_a_figure_is_written_where_it_says_and_a_csv_s_folders_are_made(ws, tmp_path, capsys):
    assert run_cli("--workspace", ws, "probe", RUN, "--out", tmp_path / "fig") == 0
    assert f"wrote {tmp_path / 'fig.png'}" in capsys.readouterr().out
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert run_cli("--workspace", ws, "probe", RUN, "--csv", tmp_path / "new" / "folder" / "t.csv") == 0
    assert (tmp_path / "new" / "folder" / "t.csv").read_text().startswith("run,model,layer,")


# -- a probe on too few people ---------------------------------------------------------------------
def test_a_probe_with_one_person_to_learn_from_is_one_line(tmp_path, capsys):
    assert (
        run_cli(
            "--workspace",
            tmp_path,
            "run",
            "--preset",
            "tiny",
            "--people",
            "2",
            "--strategy",
            "mix",
            "--set",
            "train.mix.epochs=2",
        )
        == 0
    )
    run = next((tmp_path / "runs").iterdir()).name
    for backend in ("lbfgs", "sklearn"):
        assert "probes need at least 2 people to train on" in refused(
            capsys, "--workspace", tmp_path, "probe", run, "--models", "mix", "--backend", backend
        )


# -- a missing checkpoint or tokenizer -------------------------------------------------------------
def test_a_missing_checkpoint_is_one_line_and_leaves_no_store(ws, capsys):
    shutil.rmtree(ws / "runs" / RUN / "checkpoints" / "mix" / "final")
    (ws / "runs" / RUN / "done" / "train-mix.json").unlink()  # as a run whose mix phase never finished
    err = refused(capsys, "--workspace", ws, "dump", RUN, "--out", ws / "x.zarr")
    assert "model mix is not trained yet" in err or "checkpoints/mix/final is missing" in err
    assert not (ws / "x.zarr").exists() and not (ws / "x.zarr.partial").exists()


def test_a_lost_tokenizer_is_made_again_on_resume(ws, tiny_run):
    shutil.rmtree(ws / "runs" / RUN / "tokenizer")
    assert run_cli("--workspace", ws, "resume", RUN) == 0
    assert (ws / "runs" / RUN / "tokenizer" / "tokenizer.json").read_bytes() == (
        tiny_run / "tokenizer" / "tokenizer.json"
    ).read_bytes()


# -- a bad setting is refused before torch is imported ---------------------------------------------
def test_a_bad_setting_is_refused_without_importing_torch(tmp_path):
    code = (
        "import sys; from jobs.cli import main; "
        f"rc = main(['--workspace', {str(tmp_path)!r}, 'run', '--preset', 'tiny', '--set', 'train.mix.speed=3']); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False"]
