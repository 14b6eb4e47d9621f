"""Every supported family by path, end to end: a tiny random checkpoint of each (GPT-2, GPT-NeoX /
Pythia, Mistral, Qwen2; Llama is tests/jobs/test_hf_checkpoint.py) with a byte-level BPE tokenizer,
saved by the test, goes through `factrecall-jobs run` (packed training, greedy generation, exact-match
scoring), the activation store (resid_mid, whose capture point tests/store/test_sites.py proves
for each family) and `factrecall-jobs probe`. A checkpoint factrecall cannot use is refused in one
line before anything is written."""

import pandas as pd
import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaModel,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import store
from jobs.run.corpus import bio_entries, prompts
from jobs.run.people import generate_people
from jobs.run.spec import build_spec
from jobs.run.tokenizer import load_tokenizer
from tests.helpers import metrics, run_cli
from tests.jobs.test_hf_checkpoint import _save_checkpoint

LLAMA_LIKE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
FAMILIES = {
    "gpt2": lambda v, bos, eos: GPT2LMHeadModel(
        GPT2Config(vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=512, bos_token_id=bos, eos_token_id=eos)
    ),
    "pythia": lambda v, bos, eos: GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=v,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            use_parallel_residual=True,
            bos_token_id=bos,
            eos_token_id=eos,
        )
    ),
    "mistral": lambda v, bos, eos: MistralForCausalLM(
        MistralConfig(vocab_size=v, bos_token_id=bos, eos_token_id=eos, **LLAMA_LIKE)
    ),
    "qwen2": lambda v, bos, eos: Qwen2ForCausalLM(
        Qwen2Config(vocab_size=v, bos_token_id=bos, eos_token_id=eos, **LLAMA_LIKE)
    ),
}


@pytest.fixture(scope="module")
def corpus():
    spec = build_spec("tiny")
    people = generate_people(spec.data, seed=0)
    entries = bio_entries(people, spec.data, seed=0)
    return ([e.text for e in entries] + [f"{p.qa} {p.answer}." for p in prompts(people, entries)]) * 3


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_family_trains_scores_dumps_and_probes_by_path(family, corpus, tmp_path):
    torch.manual_seed(0)
    _save_checkpoint(tmp_path / family, corpus, model=FAMILIES[family])
    code = run_cli(
        "--workspace",
        tmp_path,
        "run",
        "--preset",
        "tiny",
        "--strategy",
        "bio",
        "--model",
        tmp_path / family,
        "--set",
        "train.bio.epochs=60",
        "--set",
        "train.row_len=256",
        "--set",
        "train.eval_every=0",
        "--name",
        family,
    )  # BIO 94-100 here; no accuracy samples while training
    assert code == 0
    run = tmp_path / "runs" / family
    m = metrics(run)
    assert m["untrained"]["bio"]["avg"] == 0
    assert m["bio"]["bio"]["avg"] >= 50, m["bio"]["bio"]  # it learned its BIO facts, and generation reads them back
    s = store.open(run)
    assert s.complete() and s.models == ("untrained", "bio") and s.layers == 2 and s.hidden == 64
    h = s.acts("bio_long", 1, "job", model="bio")
    assert h.shape == (16, 64) and torch.from_numpy(h.astype("float32")).isfinite().all() and h.std() > 0
    assert (
        run_cli(
            "--workspace",
            tmp_path,
            "probe",
            family,
            "--models",
            "bio",
            "--train-split",
            "all",
            "--test-split",
            "all",
            "--csv",
            tmp_path / "probe.csv",
            "--out",
            tmp_path / "probe.png",
        )
        == 0
    )
    probes = pd.read_csv(tmp_path / "probe.csv")
    assert sorted(set(probes["model"])) == ["bio", "untrained"]  # the model asked for, and the baseline
    probes = probes[probes["model"] == "bio"]
    assert sorted(probes["layer"]) == [0, 1]
    # Probes that are trained and tested on the same people fit them: a store of random vectors
    # could not be read this well at every layer, one of zeros not at all.
    assert probes.filter(like="acc").max(axis=1).min() > 50


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (
            lambda v: OPTForCausalLM(
                OPTConfig(
                    vocab_size=v,
                    hidden_size=32,
                    num_hidden_layers=1,
                    ffn_dim=64,
                    num_attention_heads=4,
                    word_embed_proj_dim=32,
                )
            ),
            "a 'opt' model, which factrecall cannot read hidden states from; supported are Llama (llama), Mistral",
        ),
        (
            lambda v: LlamaModel(LlamaConfig(vocab_size=v, **LLAMA_LIKE)),
            "a LlamaModel checkpoint has no language-model head; give a causal LM",
        ),
        (
            lambda v: BertModel(
                BertConfig(
                    vocab_size=v, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
                )
            ),
            "a 'bert' model, which factrecall cannot read hidden states from",
        ),
    ],
    ids=["opt", "no-lm-head", "bert"],
)
def test_a_checkpoint_factrecall_cannot_use_is_refused_in_one_line(make, says, corpus, tmp_path, capsys):
    _save_checkpoint(tmp_path / "m", corpus[:200], model=lambda v, bos, eos: make(v))
    assert run_cli("--workspace", tmp_path / "ws", "run", "--preset", "tiny", "--model", tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists()  # refused before anything was written


def test_a_tokenizer_with_ids_beyond_the_embedding_is_refused(corpus, tmp_path, capsys):
    """Qwen2's tokenizer class adds a pad token of its own to a tokenizer saved without one: a model
    sized for the tokenizer as saved has no embedding row for it."""
    _save_checkpoint(tmp_path / "m", corpus[:200], model=FAMILIES["qwen2"])
    sized = len(load_tokenizer(tmp_path / "m"))
    FAMILIES["qwen2"](sized - 1, 0, 1).save_pretrained(tmp_path / "m")
    assert (
        run_cli(
            "--workspace", tmp_path / "ws", "run", "--preset", "tiny", "--strategy", "bio", "--model", tmp_path / "m"
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"its tokenizer has {sized} tokens but the model's embedding only {sized - 1} rows" in err
    assert "'<|endoftext|>'" in err and len(err.strip().splitlines()) == 1


def test_a_checkpoint_without_its_tokenizer_is_refused(corpus, tmp_path, capsys):
    _save_checkpoint(tmp_path / "m", corpus[:200], model=FAMILIES["gpt2"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "m" / name).unlink(missing_ok=True)
    assert run_cli("--workspace", tmp_path / "ws", "submit", "--preset", "tiny", "--model", tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert "no tokenizer beside the weights" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists()
