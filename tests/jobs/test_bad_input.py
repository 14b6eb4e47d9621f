"""Bad input, as a table: each case is a command a researcher might type, the one line it must answer
with, and exit status 2 (a usage error: change the command). No traceback, and nothing on disk changes:
the workspace, its finished run and its stores are byte for byte and time for time as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import zarr

from jobs.cli import main

CUDA = torch.cuda.is_available()

# id: (argv after --workspace WS, the message, files to write first {path relative to WS: text})
CASES: dict[str, tuple[list[str], str, dict[str, str]]] = {
    # settings
    "negative people": (["run", "--preset", "tiny", "--people", "-5"], "invalid setting data.people=-5", {}),
    "people not a number": (["run", "--preset", "tiny", "--set", "data.people=abc"], "invalid setting data.people='abc': Input should be a valid integer", {}),
    "unknown preset": (["run", "--preset", "huge"], "unknown preset 'huge'", {}),
    "unknown strategy": (["run", "--preset", "tiny", "--strategy", "stagee"], "invalid choice: 'stagee'", {}),
    "a setting without a value": (["run", "--preset", "tiny", "--set", "train.mix.lr"], "write it as key=value", {}),
    "an unknown setting": (["run", "--preset", "tiny", "--set", "train.mix.speed=3"], "invalid setting train.mix.speed=3", {}),
    "a fraction over 1": (["run", "--preset", "tiny", "--qa-in-fraction", "1.5"], "data.qa_in_fraction=1.5", {}),
    "infinite epochs": (["run", "--preset", "tiny", "--set", "train.bio.epochs=inf"], "Input should be a finite", {}),
    "rows too short": (["run", "--preset", "tiny", "--set", "train.row_len=8"], "invalid setting train.row_len=8", {}),
    "too many snapshots": (["reproduce", "--preset", "tiny", "--snapshots", "100"], "train.snapshots=100", {}),
    "repeated seeds": (["run", "--preset", "tiny", "--seeds", "0", "0"], "seeds repeat", {}),
    "an unknown faker locale": (["run", "--preset", "tiny", "--set", 'data.locale="xx_XX"'], "faker has no locale 'xx_XX'", {}),
    "a run name leaving the workspace": (["run", "--preset", "tiny", "--name", "../../escaped"],
                                         "run name '../../escaped': use letters, digits", {}),
    "an unknown device": (["run", "--preset", "tiny", "--device", "tpu"], "unknown device 'tpu'", {}),
    # files
    "a missing config file": (["run", "--preset", "tiny", "--config", "missing.toml"], "config file missing.toml does not exist", {}),
    "a config file that is not TOML": (["run", "--preset", "tiny", "--config", "bad.toml"], "is not valid TOML",
                                       {"bad.toml": "[train\nlr = 1"}),
    "a config file with an unknown setting": (["run", "--preset", "tiny", "--config", "odd.toml"], "invalid setting",
                                              {"odd.toml": "[train.mix]\nspeed = 3\n"}),
    # checkpoints
    "a missing model": (["run", "--preset", "tiny", "--model", "nowhere"], "no Hugging Face checkpoint there", {}),
    "a model that is a file": (["run", "--preset", "tiny", "--model", "weights.bin"], "no Hugging Face checkpoint there",
                               {"weights.bin": "x"}),
    "a model whose config is not JSON": (["run", "--preset", "tiny", "--model", "m"], "config.json cannot be read",
                                         {"m/config.json": "{model_type: llama"}),
    "a model of an unsupported family": (["run", "--preset", "tiny", "--model", "m"], "a 'bert' model, which factrecall cannot",
                                         {"m/config.json": '{"model_type": "bert", "architectures": ["BertModel"]}'}),
    "a model without an LM head": (["run", "--preset", "tiny", "--model", "m"], "a LlamaModel checkpoint has no language-model head",
                                   {"m/config.json": '{"model_type": "llama", "architectures": ["LlamaModel"]}'}),
    "a model without its tokenizer": (["run", "--preset", "tiny", "--model", "m"], "no tokenizer beside the weights",
                                      {"m/config.json": '{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}'}),
    # runs
    "a workspace that is a file": (["--workspace", "notes.txt", "run", "--preset", "tiny"], "choose a writable --workspace",
                                   {"notes.txt": "mine"}),
    "showing a run that is not there": (["show", "nope"], "no run 'nope'", {}),
    "resuming a run that is not there": (["resume", "nope"], "no run 'nope'", {}),
    "a run folder of another experiment": (["run", "--preset", "tiny", "--name", "RUN", "--people", "12"],
                                           "holds a different experiment (data.people: 16 -> 12)", {}),
    "a run whose spec is damaged": (["resume", "damaged"], "damaged/spec.json", {"runs/damaged/spec.json": '{"preset": "tiny", '}),
    # stores and probes
    "probing an unknown attribute": (["probe", "RUN", "--attribute", "shoe_size"], "unknown attribute 'shoe_size'", {}),
    "probing a layer that does not exist": (["probe", "RUN", "--layers", "1", "7"], "layer 7 does not exist: this store has layers 0..1", {}),
    "probing a model not dumped": (["probe", "RUN", "--models", "qa"], "has no dumped model 'qa'", {}),
    "probing a foreign Zarr group": (["probe", "stores/foreign.zarr"], "not a factrecall activation store", {}),
    "probing a truncated store": (["probe", "stores/truncated.zarr"], "is truncated: array 'resid_mid' is missing", {}),
    "probing a store of a newer schema": (["probe", "stores/newer.zarr"], "has store schema version 99, newer than", {}),
    "exporting into a folder that is not there": (["export", "RUN", "--hdf5", "no/such/folder/acts.h5"], "cannot write", {}),
}
if not CUDA:
    CASES["a GPU on a machine without one"] = (["run", "--preset", "tiny", "--device", "cuda"], "torch sees no GPU", {})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_run) -> Path:
    """A workspace with a finished run (RUN) and three stores that are not right."""
    ws = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(tiny_run, ws / "runs" / tiny_run.name)
    stores = ws / "stores"
    stores.mkdir()
    zarr.open_group(stores / "foreign.zarr", mode="w").attrs["owner"] = "someone else"
    shutil.copytree(tiny_run / "activations.zarr", stores / "truncated.zarr")
    shutil.rmtree(stores / "truncated.zarr" / "resid_mid")
    shutil.copytree(tiny_run / "activations.zarr", stores / "newer.zarr")
    meta = json.loads((stores / "newer.zarr" / "zarr.json").read_text())
    meta["attributes"]["factrecall"]["version"] = 99  # as a later factrecall would write it
    (stores / "newer.zarr" / "zarr.json").write_text(json.dumps(meta))
    return ws


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, workspace, tiny_run, capsys, monkeypatch):
    argv, message, files = CASES[case]
    made = []  # the top-most new path of each file, removed afterwards
    for rel, text in files.items():
        parts = Path(rel).parts
        made.append(next(workspace.joinpath(*parts[: k + 1]) for k in range(len(parts))
                         if not workspace.joinpath(*parts[: k + 1]).exists()))
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_text(text)
    monkeypatch.chdir(workspace)
    argv = [tiny_run.name if a == "RUN" else a for a in argv]
    if argv[0] != "--workspace":
        argv = ["--workspace", str(workspace), *argv]
    before = _tree(workspace)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    out = capsys.readouterr()
    text = (out.out + out.err).strip()
    assert code == 2, text
    assert message in text, text
    assert len(text.splitlines()) == 1, text
    assert _tree(workspace) == before  # nothing written, nothing touched
    assert not (workspace.parent / "escaped").exists()
    for target in made:  # leave the workspace as the next case expects it
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def test_the_table_covers_what_the_issue_names():
    assert len(CASES) >= 25


def test_a_read_only_workspace_is_one_line_exit_2(tmp_path, capsys):
    """A workspace on a read-only filesystem (a tmpfs mounted read-only: needs root, as permission
    bits do not stop root; a workspace that is a file is in the table above)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip() or made.returncode}")
    try:
        capsys.readouterr()
        assert main(["--workspace", str(mount / "ws"), "run", "--preset", "tiny"]) == 2
        err = capsys.readouterr().err.strip()
        assert "Read-only file system; choose a writable --workspace" in err and len(err.splitlines()) == 1
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
