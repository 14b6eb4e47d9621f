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
from transformers import GPT2Config, GPT2LMHeadModel

from jobs.cli import main
from tests.jobs.test_hf_checkpoint import _save_checkpoint

CUDA = torch.cuda.is_available()

# A Llama checkpoint's files, but for its weights (each case adds its own), and a weights file that
# promises 4,096 bytes of tensor data and holds none.
LLAMA_FILES = {
    "m/config.json": json.dumps(
        {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": 32,
            "hidden_size": 8,
            "num_hidden_layers": 1,
        }
    ),
    "m/tokenizer.json": "{}",
}
_HEADER = json.dumps(
    {"model.embed_tokens.weight": {"dtype": "F32", "shape": [32, 32], "data_offsets": [0, 4096]}}
).encode()
TRUNCATED = len(_HEADER).to_bytes(8, "little") + _HEADER + b"\0" * 100

# id: (argv after --workspace WS, the message, files to write first {path relative to WS: text})
CASES: dict[str, tuple[list[str], str, dict[str, str | bytes]]] = {
    # settings
    "negative people": (
        ["run", "--preset", "tiny", "--people", "-5"],
        "argument --people: -5 is out of range: give 2 or more",
        {},
    ),
    "people not a number": (
        ["run", "--preset", "tiny", "--set", "data.people=abc"],
        "invalid setting data.people='abc': Input should be a valid integer",
        {},
    ),
    "unknown preset": (["run", "--preset", "huge"], "unknown preset 'huge'", {}),
    "unknown strategy": (["run", "--preset", "tiny", "--strategy", "stagee"], "invalid choice: 'stagee'", {}),
    "a setting without a value": (["run", "--preset", "tiny", "--set", "train.mix.lr"], "write it as key=value", {}),
    "an unknown setting": (
        ["run", "--preset", "tiny", "--set", "train.mix.speed=3"],
        "invalid setting train.mix.speed=3",
        {},
    ),
    "a fraction over 1": (
        ["run", "--preset", "tiny", "--qa-in-fraction", "1.5"],
        "argument --qa-in-fraction: 1.5 is out of range",
        {},
    ),
    "infinite epochs": (["run", "--preset", "tiny", "--set", "train.bio.epochs=inf"], "Input should be a finite", {}),
    "rows too short": (["run", "--preset", "tiny", "--set", "train.row_len=8"], "invalid setting train.row_len=8", {}),
    "too many snapshots": (
        ["reproduce", "--preset", "tiny", "--snapshots", "100"],
        "argument --snapshots: 100 is out of range",
        {},
    ),
    "too many snapshots as a setting": (
        ["run", "--preset", "tiny", "--set", "train.snapshots=100"],
        "train.snapshots=100",
        {},
    ),
    "repeated seeds": (["run", "--preset", "tiny", "--seeds", "0", "0"], "seeds repeat", {}),
    "an unknown faker locale": (
        ["run", "--preset", "tiny", "--set", 'data.locale="xx_XX"'],
        "faker has no locale 'xx_XX'",
        {},
    ),
    "a run name leaving the workspace": (
        ["run", "--preset", "tiny", "--name", "../../escaped"],
        "run name '../../escaped': use letters, digits",
        {},
    ),
    "an unknown device": (["run", "--preset", "tiny", "--device", "tpu"], "unknown device 'tpu'", {}),
    # files
    "a missing config file": (
        ["run", "--preset", "tiny", "--config", "missing.toml"],
        "config file missing.toml does not exist",
        {},
    ),
    "a config file that is not TOML": (
        ["run", "--preset", "tiny", "--config", "bad.toml"],
        "is not valid TOML",
        {"bad.toml": "[train\nlr = 1"},
    ),
    "a config file with an unknown setting": (
        ["run", "--preset", "tiny", "--config", "odd.toml"],
        "invalid setting",
        {"odd.toml": "[train.mix]\nspeed = 3\n"},
    ),
    # checkpoints
    "a missing model": (["run", "--preset", "tiny", "--model", "./nowhere"], "no Hugging Face checkpoint there", {}),
    "a model name never imported": (
        ["run", "--preset", "tiny", "--model", "nowhere"],
        "--model nowhere: no such folder, and no model imported",
        {},
    ),
    "a preset whose model was never imported": (
        ["reproduce", "--preset", "smol", "--seeds", "0"],
        "model.path (preset smol) smollm2-135m: no such folder, and no model imported",
        {},
    ),
    "a model that is a file": (
        ["run", "--preset", "tiny", "--model", "weights.bin"],
        "no Hugging Face checkpoint there",
        {"weights.bin": "x"},
    ),
    "a model whose config is not JSON": (
        ["run", "--preset", "tiny", "--model", "m"],
        "config.json cannot be read",
        {"m/config.json": "{model_type: llama"},
    ),
    "a model of an unsupported family": (
        ["run", "--preset", "tiny", "--model", "m"],
        "a 'bert' model, which factrecall cannot",
        {"m/config.json": '{"model_type": "bert", "architectures": ["BertModel"]}'},
    ),
    "a model without an LM head": (
        ["run", "--preset", "tiny", "--model", "m"],
        "a LlamaModel checkpoint has no language-model head",
        {"m/config.json": '{"model_type": "llama", "architectures": ["LlamaModel"]}'},
    ),
    "a model without its tokenizer": (
        ["run", "--preset", "tiny", "--model", "m"],
        "no tokenizer beside the weights",
        {"m/config.json": '{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}'},
    ),
    # runs
    "a workspace that is a file": (
        ["--workspace", "notes.txt", "run", "--preset", "tiny"],
        "choose a writable --workspace",
        {"notes.txt": "mine"},
    ),
    "showing a run that is not there": (["show", "nope"], "no run 'nope'", {}),
    "resuming a run that is not there": (["resume", "nope"], "no run 'nope'", {}),
    "a run folder of another experiment": (
        ["run", "--preset", "tiny", "--name", "RUN", "--people", "12"],
        "holds a different experiment (data.people: 16 -> 12)",
        {},
    ),
    "a run whose spec is damaged": (
        ["resume", "damaged"],
        "damaged/spec.json",
        {"runs/damaged/spec.json": '{"preset": "tiny", '},
    ),
    # stores and probes
    "probing an unknown attribute": (["probe", "RUN", "--attribute", "shoe_size"], "unknown attribute 'shoe_size'", {}),
    "probing a layer that does not exist": (
        ["probe", "RUN", "--layers", "1", "7"],
        "layer 7 does not exist: this store has layers 0..1",
        {},
    ),
    "probing a model not dumped": (["probe", "RUN", "--models", "qa"], "has no dumped model 'qa'", {}),
    "probing a foreign Zarr group": (["probe", "stores/foreign.zarr"], "not a factrecall activation store", {}),
    "probing a truncated store": (["probe", "stores/truncated.zarr"], "is truncated: array 'resid_mid' is missing", {}),
    "probing a store of a newer schema": (
        ["probe", "stores/newer.zarr"],
        "has store schema version 99, newer than",
        {},
    ),
    # outputs onto a file that is not factrecall's, or into what the command reads
    "exporting over the run's metrics.json": (
        ["export", "RUN", "--hdf5", "runs/RUN/metrics.json"],
        "exists and is not an HDF5 file factrecall wrote",
        {},
    ),
    "exporting into the store it reads": (
        ["export", "RUN", "--hdf5", "runs/RUN/activations.zarr/acts.h5"],
        "which this command reads; write it elsewhere",
        {},
    ),
    "probe's CSV over the run's spec": (
        ["probe", "RUN", "--csv", "runs/RUN/spec.json"],
        "exists and is not a CSV file factrecall wrote",
        {},
    ),
    "a plot over a file of the user's": (
        ["plot", "RUN", "--out", "notes.txt"],
        "is not a figure file",
        {"notes.txt": "mine"},
    ),
    # numbers out of range
    "a worker without slots": (
        ["worker", "--slots", "-1"],
        "argument --slots: -1 is out of range: give 1 or more",
        {},
    ),
    "a negative batch": (["dump", "RUN", "--batch-size", "-1", "--out", "x.zarr"], "argument --batch-size", {}),
    "an empty batch": (["dump", "RUN", "--batch-size", "0", "--out", "x.zarr"], "0 is out of range", {}),
    # the seed and the preset are flags, not settings
    "the seed as a setting": (["run", "--preset", "tiny", "--set", "seed=5"], "the seed is not a setting", {}),
    "the seed in a config file": (
        ["run", "--preset", "tiny", "--config", "seeded.toml"],
        "the seed is not a setting",
        {"seeded.toml": "seed = 7\n"},
    ),
    "the preset in a config file": (
        ["run", "--preset", "tiny", "--config", "preset.toml"],
        "the preset is not a setting",
        {"preset.toml": 'preset = "paper"\n'},
    ),
    # a run too large for the machine, or a config file that never ends
    "a billion people": (["run", "--preset", "tiny", "--people", "1000000000"], "needs at least", {}),
    "a model too wide for any machine": (
        ["run", "--preset", "tiny", "--set", "model.hidden=262144"],
        "needs at least",
        {},
    ),
    "a pool faker cannot fill": (
        ["run", "--preset", "tiny", "--set", "data.pool_size=100000000"],
        "invalid setting data.pool_size=100000000",
        {},
    ),
    "a config file that never ends": (
        ["run", "--preset", "tiny", "--config", "/dev/zero"],
        "is a character device, not a file",
        {},
    ),
    # a probe's flags
    "an infinite penalty": (["probe", "RUN", "--l2", "inf"], "argument --l2: inf is out of range", {}),
    "a figure into a folder": (["probe", "RUN", "--out", "stores"], "stores is a folder; give a file name", {}),
    # a config file that is not one, a seed numpy cannot take
    "a config file that is a folder": (
        ["run", "--preset", "tiny", "--config", "stores"],
        "is a folder where a file should be",
        {},
    ),
    "a config file that is not text": (
        ["run", "--preset", "tiny", "--config", "binary.toml"],
        "is not UTF-8 text",
        {"binary.toml": b"\xff\xfe\x00seed"},
    ),
    "a seed numpy cannot take": (["run", "--preset", "tiny", "--seed", str(10**20)], "argument --seed", {}),
    "a study's seed numpy cannot take": (
        ["reproduce", "--preset", "tiny", "--seeds", str(10**20), "--dry-run"],
        "argument --seeds",
        {},
    ),
    # weights and tokenizers that are not what they say
    "truncated weights": (
        ["run", "--preset", "tiny", "--model", "m"],
        "model.safetensors is truncated",
        {**LLAMA_FILES, "m/model.safetensors": TRUNCATED},
    ),
    "pickle weights": (
        ["run", "--preset", "tiny", "--model", "m"],
        "its weights are pickles (pytorch_model.bin)",
        {**LLAMA_FILES, "m/pytorch_model.bin": b"\x80\x04pickle"},
    ),
    "weights that do not fit the config": (
        ["run", "--preset", "tiny", "--model", "models/mismatched"],
        "its weights do not fit its config.json",
        {},
    ),
    "a garbage tokenizer": (
        ["run", "--preset", "tiny", "--model", "m"],
        "tokenizer.json is damaged",
        {**LLAMA_FILES, "m/tokenizer.json": "{garbage"},
    ),
    # a dump's flags
    "dumping a model the run has not": (["dump", "RUN", "--models", "nosuch"], "has no model 'nosuch'", {}),
    "dumping into negative chunks": (["dump", "RUN", "--chunk-people", "-3"], "argument --chunk-people", {}),
    # a study's machine; the workspace and its runs
    "a GPU of negative memory": (
        ["reproduce", "--preset", "tiny", "--dry-run", "--gpu-memory", "-5"],
        "argument --gpu-memory",
        {},
    ),
    "not-a-number TFLOP/s": (
        ["reproduce", "--preset", "tiny", "--dry-run", "--tflops", "nan"],
        "argument --tflops",
        {},
    ),
    "zero TFLOP/s": (["reproduce", "--preset", "tiny", "--dry-run", "--tflops", "0"], "argument --tflops", {}),
    "an empty workspace": (["--workspace", "", "run", "--preset", "tiny"], "the workspace is empty", {}),
    "cancelling a run that is not there": (["cancel", "nope"], "no run 'nope'", {}),
    "deleting without --yes": (["delete", "RUN"], "for good: add --yes, or `archive` instead", {}),
    "archiving a run that is not there": (["archive", "nope"], "no run 'nope'", {}),
    "archiving a run folder of no workspace": (
        ["archive", "elsewhere/x"],
        "is not a run of the workspace",
        {"elsewhere/x/spec.json": "{}"},
    ),
    # a model too short for the rows
    "rows longer than the model's positions": (
        ["run", "--preset", "tiny", "--model", "models/short-gpt2"],
        "has 64 positions, fewer than train.row_len=128",
        {},
    ),
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
    texts = ["Ann Lee was born on May 1, 1990. What is the birth date of Ann Lee? May 1, 1990."] * 20
    _save_checkpoint(ws / "models" / "mismatched", texts)  # 64 wide, then a config.json that says 128
    config = json.loads((ws / "models" / "mismatched" / "config.json").read_text())
    (ws / "models" / "mismatched" / "config.json").write_text(json.dumps({**config, "hidden_size": 128}))
    _save_checkpoint(
        ws / "models" / "short-gpt2",
        texts,
        model=lambda v, bos, eos: GPT2LMHeadModel(
            GPT2Config(vocab_size=v, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=bos, eos_token_id=eos)
        ),
    )
    return ws


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, workspace, tiny_run, capsys, monkeypatch):
    argv, message, files = CASES[case]
    made = []  # the top-most new path of each file, removed afterwards
    for rel, text in files.items():
        parts = Path(rel).parts
        made.append(
            next(
                workspace.joinpath(*parts[: k + 1])
                for k in range(len(parts))
                if not workspace.joinpath(*parts[: k + 1]).exists()
            )
        )
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(workspace)
    argv = [tiny_run.name if a == "RUN" else a.replace("runs/RUN/", f"runs/{tiny_run.name}/") for a in argv]
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
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def test_the_table_keeps_every_case():
    """No row lost in an edit: a row that no longer applies is removed on purpose, with this count."""
    assert len(CASES) >= 72


def test_a_read_only_workspace_is_one_line_exit_2(tmp_path, capsys):
    """A workspace on a read-only filesystem (a tmpfs mounted read-only: needs root, as permission
    bits do not stop root; a workspace that is a file is in the table above)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", str(mount)], capture_output=True)
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
