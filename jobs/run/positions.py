"""Capture positions: the token of each prompt where a site's vector is read (a site is hook x
position, `store.names`). The names are `store.names.POSITIONS`; what they mean is below, and
docs/sites.md carries the same words.

Token indices are into the prompt's ids as `jobs.run.dump.encode_formats` makes them,
`tok(texts, add_special_tokens=True)`: index 0 is the BOS token where the tokenizer adds one.
`prompt_positions` makes those ids itself, in the one batched call that also returns the character
offsets (`add_special_tokens=True, return_offsets_mapping=True`); that call's `input_ids` are the
ids the indices count in, the same as `encode_formats`' (asking for offsets changes no id).

- `last`: the last token of the prompt, index len(ids) - 1; its next token is the answer's first.
- `name_last`: the last token of the last occurrence of the person's full name (`Person.name`) in the
  prompt text, as a whole word (no letter or digit right before or after it). Every prompt of every
  format holds the full name (BIO_long's first sentence always names the person). In `bio_short` and
  `qa` it is the subject mention.
- `subject_last`: the last token of the subject mention in the clause the relation words belong to,
  i.e. the mention the relation (whose next token is the answer) is about. In `bio_short` and `qa`: the
  full name (the same token as `name_last`). In `bio_long`: the subject of the entry's last,
  unfinished sentence: the full name where that sentence names the person (the entry's first
  sentence, or every sentence with `data.full_name`), else the pronoun (He/She, or the possessive
  His/Her: the word itself, not a following token). A possessive `'s` after a name is not part of the
  name: the mention is the name.

How `bio_long`'s mention is found, from the texts alone (not from the templates, which users may bring
their own of): `bio_short` is the same relation words filled with the full name, so `bio_long` ends
either with `bio_short` (the named candidate: the mention is the name's last occurrence in `bio_long`)
or with `bio_short` whose first occurrence of the name is replaced by the pronoun of the person's
gender (`name's` -> His/Her, `name` -> He/She: the pronoun candidate, whose pronoun is the mention).
A candidate matches when `bio_long` ends with it and no letter or digit comes right before it;
exactly one must match.

A character span maps to a token through the tokenizer's offsets: the token of a span's end is the
(last) token whose offsets (start, end) hold the span's last character c, start <= c < end. That holds
whether a byte-level BPE token's offsets cover its leading space (" Smith", `trim_offsets=False`, as
GPT-2's) or not. A position is refused as ambiguous, with one line naming the person, attribute,
format and the prompt's tail (a `FactrecallError`), when the name or mention is not found, when
`bio_long` ends with no candidate or with both, when the token holding the span's last character runs
past the span's end into a letter or digit (the tokenizer merged the name's end with what follows, as
a whitespace-only word tokenizer does with "Smith's"), or when the tokenizer gives no offsets (a slow,
Python tokenizer). `last` needs no offsets: asked alone, it is computed with any tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

from jobs.errors import FactrecallError
from jobs.run.corpus import _PRONOUNS, Prompt
from jobs.run.people import Person
from store.names import FORMATS, POSITIONS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_SPLIT_WORDS = "use a tokenizer that splits words at spaces and punctuation (byte-level BPE does)"
_MAKE_AGAIN = "make the data again (delete the run's data/ folder and done/data.json, and resume)"


def prompt_positions(
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    people: Mapping[int, Person] | Iterable[Person],
    fmt: str,
    positions: Iterable[str] = POSITIONS,
) -> dict[str, np.ndarray]:
    """For each asked position name, an int64 array of token indices, one per prompt of format `fmt`
    in the prompts' order (the module's docstring defines them). One tokenizer call for all prompts;
    raises `FactrecallError` (one line) where a position is ambiguous."""
    asked = tuple(dict.fromkeys(positions))
    unknown = [p for p in asked if p not in POSITIONS]
    if unknown:
        raise FactrecallError(f"unknown position {unknown[0]!r}: choose from {', '.join(POSITIONS)}")
    if fmt not in FORMATS:
        raise FactrecallError(f"unknown prompt format {fmt!r}: choose from {', '.join(FORMATS)}")
    by_index = dict(people) if isinstance(people, Mapping) else {p.index: p for p in people}
    texts = [p.text(fmt) for p in prompts]
    spans = [s for s in asked if s != "last"]
    # A slow tokenizer is not asked for offsets (it ignores the request, or raises): it is refused below.
    fast = getattr(tok, "is_fast", False)
    enc = tok(texts, add_special_tokens=True, return_offsets_mapping=bool(spans) and fast)
    lengths = np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64, count=len(texts))
    out: dict[str, np.ndarray] = {}
    if "last" in asked:
        out["last"] = lengths - 1
    if not spans:
        return out
    offsets = enc.get("offset_mapping") if fast else None
    if offsets is None:
        raise FactrecallError(
            f"cannot place {', '.join(spans)} in the {fmt} prompts: the tokenizer "
            f"({type(tok).__name__}) gives no character offsets (a slow, Python tokenizer); use its fast "
            "version (a tokenizer.json, AutoTokenizer with use_fast=True), or read position 'last' only"
        )
    name_span, subject_span = _char_spans(prompts, texts, by_index, fmt, need_subject="subject_last" in spans)
    flat = _Offsets(offsets, lengths)
    if "name_last" in spans:
        out["name_last"] = flat.token_of_end(name_span, texts, prompts, by_index, fmt, "name_last")
    if "subject_last" in spans:
        if subject_span is name_span and "name_last" in out:
            out["subject_last"] = out["name_last"].copy()
        else:
            out["subject_last"] = flat.token_of_end(subject_span, texts, prompts, by_index, fmt, "subject_last")
    return {p: out[p] for p in asked}


def _refuse(prompt: Prompt, person: Person | None, fmt: str, text: str, what: str, why: str, todo: str):
    who = f"person {prompt.person}" + (f" ({person.name!r})" if person is not None else "")
    raise FactrecallError(
        f"cannot place {what} for {who}, {prompt.attribute}, in the {fmt} prompt (ending {text[-48:]!r}): {why}; {todo}"
    )


def _is_word(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] has no letter or digit right before or after it."""
    return (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum())


def _find_word(text: str, word: str, last: bool) -> int:
    """Where `word` occurs in `text` as a whole word (the last or the first occurrence), or -1."""
    if not word:
        return -1
    if last:
        stop = len(text)
        while (i := text.rfind(word, 0, stop)) >= 0:
            if _is_word(text, i, i + len(word)):
                return i
            stop = i + len(word) - 1
    else:
        begin = 0
        while (i := text.find(word, begin)) >= 0:
            if _is_word(text, i, i + len(word)):
                return i
            begin = i + 1
    return -1


def _ends_with(text: str, tail: str) -> bool:
    return text.endswith(tail) and _is_word(text, len(text) - len(tail), len(text))


def _char_spans(
    prompts: Sequence[Prompt], texts: list[str], by_index: Mapping[int, Person], fmt: str, need_subject: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(name span, subject span): int64 arrays (prompt, 2) of character [start, end); the subject's is
    the name's object itself where they are the same mention in every prompt (bio_short, qa)."""
    n = len(texts)
    name = np.empty((n, 2), dtype=np.int64)
    subject = np.empty((n, 2), dtype=np.int64) if need_subject and fmt == "bio_long" else name
    for k, (prompt, text) in enumerate(zip(prompts, texts)):
        person = by_index.get(prompt.person)
        if person is None:
            _refuse(prompt, None, fmt, text, "the name", "the person is not among the people given", _MAKE_AGAIN)
        i = _find_word(text, person.name, last=True)
        if i < 0:
            _refuse(
                prompt, person, fmt, text, "the name", "the prompt does not hold the person's full name", _MAKE_AGAIN
            )
        name[k] = i, i + len(person.name)
        if subject is not name:
            subject[k] = _bio_long_subject(prompt, person, text, name[k])
    return name, subject


def _bio_long_subject(prompt: Prompt, person: Person, text: str, name_span: np.ndarray) -> tuple[int, int]:
    """The character span of the subject of bio_long's last sentence (the module's docstring)."""
    short = prompt.bio_short
    i = _find_word(short, person.name, last=False)
    if i < 0:
        _refuse(
            prompt,
            person,
            "bio_long",
            text,
            "the subject",
            "its bio_short prompt does not hold the full name",
            _MAKE_AGAIN,
        )
    pronouns = _PRONOUNS.get(person.gender)
    if pronouns is None:
        _refuse(
            prompt,
            person,
            "bio_long",
            text,
            "the subject",
            f"the person's gender {person.gender!r} has no pronoun (known: {', '.join(_PRONOUNS)})",
            _MAKE_AGAIN,
        )
    nominative, possessive = pronouns[0], pronouns[1]
    j = i + len(person.name)
    pronoun, rest = (possessive, short[j + 2 :]) if short.startswith("'s", j) else (nominative, short[j:])
    with_pronoun = short[:i] + pronoun + rest
    named, unnamed = _ends_with(text, short), _ends_with(text, with_pronoun)
    if named == unnamed:
        why = (
            f"its last sentence fits both the name and {pronoun!r} as subject"
            if named
            else f"it ends neither with its bio_short relation words ({short!r}) nor with them after {pronoun!r}"
        )
        todo = "draw other people (another seed) or read position 'last' only" if named else _MAKE_AGAIN
        _refuse(prompt, person, "bio_long", text, "the subject", why, todo)
    if named:
        return int(name_span[0]), int(name_span[1])
    start = len(text) - len(with_pronoun) + i
    return start, start + len(pronoun)


class _Offsets:
    """Every prompt's token offsets, flattened: starts and ends (tokens,) and each row's first token."""

    def __init__(self, offsets: list, lengths: np.ndarray):
        total = int(lengths.sum())
        flat = np.fromiter(chain.from_iterable(chain.from_iterable(offsets)), dtype=np.int64, count=2 * total)
        flat = flat.reshape(total, 2)
        self.starts, self.ends = flat[:, 0], flat[:, 1]
        self.lengths = lengths
        self.first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.row = np.repeat(np.arange(len(lengths)), lengths)
        self.within = np.arange(total, dtype=np.int64) - self.first[self.row]

    def token_of_end(
        self,
        span: np.ndarray,
        texts: list[str],
        prompts: Sequence[Prompt],
        by_index: Mapping[int, Person],
        fmt: str,
        what: str,
    ) -> np.ndarray:
        """Per row, the index of the last token whose offsets hold the span's last character; refuses
        a row with none, or whose token runs past the span's end into a letter or digit."""
        c = (span[:, 1] - 1)[self.row]
        hit = (self.starts <= c) & (c < self.ends)
        found = np.full(len(texts), -1, dtype=np.int64)
        rows = self.lengths > 0
        if rows.any():
            found[rows] = np.maximum.reduceat(np.where(hit, self.within, -1), self.first[rows])
        for k in np.flatnonzero(found < 0)[:1]:
            _refuse(
                prompts[k],
                by_index[prompts[k].person],
                fmt,
                texts[k],
                what,
                f"no token's offsets hold the end of {texts[k][span[k, 0] : span[k, 1]]!r} (no offsets given)",
                "use a fast tokenizer that reports character offsets (a tokenizer.json)",
            )
        ends = self.ends[self.first + found]
        for k in np.flatnonzero(ends > span[:, 1]):
            past = texts[k][span[k, 1] : ends[k]]
            if any(ch.isalnum() for ch in past):
                token = texts[k][self.starts[self.first[k] + found[k]] : ends[k]]
                _refuse(
                    prompts[k],
                    by_index[prompts[k].person],
                    fmt,
                    texts[k],
                    what,
                    f"the tokenizer merges the end of {texts[k][span[k, 0] : span[k, 1]]!r} with what follows "
                    f"into the token {token!r}",
                    _SPLIT_WORDS,
                )
        return found
