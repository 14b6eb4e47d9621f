"""Any local Hugging Face checkpoint comes in by path: here a tiny random Llama with a byte-level
BPE tokenizer, made and saved by the test itself (nothing comes from a hub)."""

import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import store
from jobs.run.corpus import bio_entries, prompts
from jobs.run.people import generate_people
from jobs.run.spec import build_spec
from jobs.run.tokenizer import load_tokenizer
from tests.helpers import metrics, run_cli


def _tiny_llama(vocab_size: int, bos: int, eos: int) -> LlamaForCausalLM:
    """A random 2-layer Llama, 64 wide."""
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            bos_token_id=bos,
            eos_token_id=eos,
        )
    )


def _save_checkpoint(folder, texts, model=None):
    """A byte-level BPE tokenizer trained on `texts` and a random model for it (default: a 2-layer
    Llama; `model(vocab_size, bos_id, eos_id)` makes another), saved as a checkpoint folder."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    if model is None:
        model = _tiny_llama
    # The tokenizer as it loads beside a model of this type (whose tokenizer class can add special
    # tokens, such as Qwen2's pad): the embedding gets a row for every id, as in a real checkpoint.
    model(len(raw.get_vocab()), 0, 1).config.save_pretrained(folder)
    model(len(load_tokenizer(folder)), 0, 1).save_pretrained(folder)


def test_a_local_checkpoint_trains_and_scores_by_path(tmp_path, capsys):
    spec = build_spec("tiny")
    people = generate_people(spec.data, seed=0)
    entries = bio_entries(people, spec.data, seed=0)
    texts = [e.text for e in entries] + [f"{p.qa} {p.answer}." for p in prompts(people, entries)]
    _save_checkpoint(tmp_path / "llama", texts * 3)
    # BPE makes BIO entries longer than the built-in word tokenizer does: the default row is too short.
    assert (
        run_cli(
            "--workspace",
            tmp_path,
            "run",
            "--preset",
            "tiny",
            "--strategy",
            "bio",
            "--model",
            tmp_path / "llama",
            "--name",
            "short",
        )
        == 2
    )
    assert "raise it, e.g. --set train.row_len=256" in capsys.readouterr().err
    code = run_cli(
        "--workspace",
        tmp_path,
        "run",
        "--preset",
        "tiny",
        "--strategy",
        "bio",
        "--model",
        tmp_path / "llama",
        "--set",
        "train.bio.epochs=60",
        "--set",
        "train.row_len=256",
        "--set",
        "train.eval_every=0",
        "--name",
        "hf",
    )
    assert code == 0
    run = tmp_path / "runs" / "hf"
    m = metrics(run)
    assert m["untrained"]["bio"]["avg"] == 0
    assert m["bio"]["bio"]["avg"] >= 50  # a BPE model learns its BIO facts too
    assert json.loads((run / "spec.json").read_text())["model"]["path"] == str(tmp_path / "llama")
    assert not (run / "tokenizer").exists()  # the checkpoint's own tokenizer is used
    assert (run / "checkpoints" / "bio" / "final" / "tokenizer.json").exists()
    # The store labels a byte-level BPE model's first tokens as they decode: " M" of " Morales LLC",
    # or a bare " " where this small BPE never merged the space into the word.
    s = store.open(run)
    assert s.complete() and s.models == ("untrained", "bio") and s.hidden == 64
    labels = s.labels("employer")
    assert all((" " + a).startswith(t) for a, t in zip(labels["answer"], labels["label_text"]))
    assert labels["label_text"].str.len().max() > 1
