"""Tokenizers: a word-level one trained on the corpus for the built-in model, or a checkpoint's own.

The attribute's first token must be well defined whatever the tokenizer: for every prompt,
tokenize(prompt + " " + answer) must equal tokenize(prompt) + tokenize(" " + answer). `encode_targets`
checks that for all three formats and refuses a tokenizer/template pair that breaks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from jobs.errors import FactrecallError, TokenizerTemplateError, first_line
from jobs.run.corpus import Prompt
from jobs.words import FORMATS
from store.fileio import TEXT, read_regular

SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
ANSWER_END = "."


def train_word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Word-level vocabulary over `texts`: whitespace-separated words, each punctuation mark its own
    token ("O-." -> "O", "-", "."), so names, dates and cities become a few whole-word tokens."""
    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIAL.values())))
    bos = SPECIAL["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a local checkpoint (never fetched from a hub)."""
    if not Path(path).is_dir():
        raise FactrecallError(
            f"the tokenizer folder {path} is missing; if it is a run's, delete the run's "
            "done/tokenizer.json and resume to make it again"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - tokenizers and transformers raise their own types for a damaged file
        raise FactrecallError(f"cannot load a tokenizer from {path} ({first_line(err)}): it is damaged") from None
    if tok.pad_token is None:
        # Padding positions are masked out everywhere; any existing token serves.
        tok.pad_token = tok.eos_token or tok.unk_token or tok.convert_ids_to_tokens(0)
    return tok


def check_vocabulary(tok: PreTrainedTokenizerBase, path: str | Path) -> None:
    """Refuse a tokenizer that makes ids the checkpoint's embedding has no row for (the token
    classes transformers picks by model type can add special tokens of their own, such as a pad)."""
    config = json.loads(read_regular(Path(path) / "config.json", TEXT))
    rows = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if rows and len(tok) > rows:
        extra = [t for t, i in tok.get_vocab().items() if i >= rows][:3]
        raise FactrecallError(
            f"--model {path}: its tokenizer has {len(tok)} tokens but the model's embedding only {rows} rows "
            f"(ids from {rows} up, e.g. {', '.join(map(repr, extra))}, have none); save the tokenizer the "
            "model was trained with, or resize the model's embeddings (model.resize_token_embeddings) and save it"
        )


@dataclass(frozen=True)
class Target:
    """Token ids that must follow a prompt: the answer and the period after it."""

    first_token_id: int
    ids: tuple[int, ...]


def _ids(tok: PreTrainedTokenizerBase, texts: list[str], special: bool) -> list[list[int]]:
    return tok(texts, add_special_tokens=special)["input_ids"]


def encode_targets(tok: PreTrainedTokenizerBase, prompts: list[Prompt]) -> list[Target]:
    """One `Target` per prompt, the same for its three formats; raises `TokenizerTemplateError` if
    any format's prompt does not end on a token boundary before the answer."""
    answers = _ids(tok, [" " + p.answer for p in prompts], special=False)
    targets: list[Target] = []
    for fmt in FORMATS:
        texts = [p.text(fmt) for p in prompts]
        heads = _ids(tok, texts, special=True)
        joined = _ids(tok, [t + " " + p.answer for t, p in zip(texts, prompts)], special=True)
        closed = _ids(tok, [t + " " + p.answer + ANSWER_END for t, p in zip(texts, prompts)], special=True)
        for i, p in enumerate(prompts):
            head = heads[i]
            if not answers[i] or joined[i] != head + answers[i] or closed[i][: len(head)] != head:
                raise TokenizerTemplateError(
                    f"the tokenizer merges the {fmt} prompt with its answer for person {p.person}, "
                    f"{p.attribute} ({texts[i][-40:]!r} + {' ' + p.answer!r}), so the attribute's first "
                    "token is not defined; use a tokenizer that splits on spaces (e.g. byte-level BPE)"
                )
            tail = tuple(closed[i][len(head) :])
            if fmt == FORMATS[0]:
                targets.append(Target(first_token_id=answers[i][0], ids=tail))
            elif tail != targets[i].ids:
                raise TokenizerTemplateError(
                    f"the answer of person {p.person}, {p.attribute} tokenizes differently after the "
                    f"{fmt} prompt than after bio_long; use a tokenizer that splits on spaces"
                )
            if tail[0] != answers[i][0]:
                raise TokenizerTemplateError(
                    f"the answer of person {p.person}, {p.attribute} starts with a different token "
                    f"after the {fmt} prompt; use a tokenizer that splits on spaces"
                )
    return targets
