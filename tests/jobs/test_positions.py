"""Capture positions (jobs/run/positions.py): the token of each prompt where `last`, `name_last` and
`subject_last` read, for every stock preset's data and every augmentation, with the built-in word
tokenizer and a byte-level BPE trained here; and the one-line refusals where a position is ambiguous."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import ByT5Tokenizer, PreTrainedTokenizerFast

from jobs.errors import FactrecallError
from jobs.run.corpus import _PRONOUNS, bio_entries, prompts
from jobs.run.dump import encode_formats
from jobs.run.people import Person, generate_people
from jobs.run.positions import prompt_positions
from jobs.run.spec import build_spec, preset_names
from jobs.run.tokenizer import train_word_tokenizer
from store.names import FORMATS, POSITIONS

PEOPLE = 60  # at most, per data set: each preset's people cut down to stay fast
AUGMENTED = {
    "multi": {"bio_templates": "multi"},
    "permute": {"permute": True},
    "full_name": {"full_name": True},
    "all": {"bio_templates": "multi", "permute": True, "full_name": True, "bio_entries": 2},
}
# Each stock preset's data settings, then the augmentations on the cpu preset's; a seed each, so that
# every case draws other names.
CASES = [(p, "") for p in preset_names()] + [("cpu", a) for a in AUGMENTED]


@functools.cache
def _data(preset: str, augment: str):
    stock = build_spec(preset)
    data = {"people": min(stock.data.people, PEOPLE), **AUGMENTED.get(augment, {})}
    spec = build_spec(preset, data=data)
    seed = CASES.index((preset, augment))
    people = generate_people(spec.data, seed)
    entries = bio_entries(people, spec.data, seed)
    return spec.data, people, entries, prompts(people, entries)


def _corpus(entries, all_prompts) -> list[str]:
    """The texts the pipeline trains the built-in tokenizer on (pipeline.make_tokenizer)."""
    return [e.text for e in entries] + [f"{p.qa} {p.answer}." for p in all_prompts]


def _byte_level_bpe(texts: list[str], trim_offsets: bool, vocab: int = 500) -> PreTrainedTokenizerFast:
    """GPT-2's kind of tokenizer, trained here on a small vocabulary (names split into pieces), with a
    BOS token added in front as SmolLM2-style checkpoints do."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab, special_tokens=["<|bos|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    bos = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", raw.token_to_id("<|bos|>"))])
    raw.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=trim_offsets), bos])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|bos|>")


def _expected(data, people, entries, all_prompts, fmt):
    """Per prompt, worked out from the corpus itself (its templates included, which the module may not
    read): the character ends of the name's last occurrence and of the subject mention, and the
    pronoun that is the subject (None where the name is)."""
    first = {}
    for e in entries:
        first.setdefault(e.person, e)
    name_end, subject_end, pronouns = [], [], []
    for p in all_prompts:
        person, text = people[p.person], p.text(fmt)
        name_end.append(text.rindex(person.name) + len(person.name))
        entry = first[p.person]
        named = fmt != "bio_long" or entry.order.index(p.attribute) == 0 or data.full_name
        if named:
            subject_end.append(name_end[-1])
            pronouns.append(None)
            continue
        nominative, possessive, _ = _PRONOUNS[person.gender]
        pronoun = possessive if entry.templates[p.attribute].startswith("{s_poss}") else nominative
        start = len(text) - len(entry.relations[p.attribute])
        assert text[start:].startswith(pronoun + " ")
        subject_end.append(start + len(pronoun))
        pronouns.append(pronoun)
    return name_end, subject_end, pronouns


def _token_ending(tok, texts: list[str], ends: list[int]) -> np.ndarray:
    """The index of the token that ends text[:end], by tokenizing the prefix (both tokenizers here
    split a prefix that ends a word as they split the whole text)."""
    return np.array([len(ids) - 1 for ids in tok([t[:e] for t, e in zip(texts, ends)])["input_ids"]])


def _check_format(tok, data, people, entries, all_prompts, fmt, faithful_decode: bool) -> dict[str, int]:
    texts = [p.text(fmt) for p in all_prompts]
    ids = encode_formats(tok, all_prompts)[fmt]
    assert tok(texts, add_special_tokens=True, return_offsets_mapping=True)["input_ids"] == ids
    got = prompt_positions(tok, all_prompts, people, fmt)
    assert list(got) == list(POSITIONS)
    assert all(v.dtype == np.int64 and v.shape == (len(all_prompts),) for v in got.values())
    last, name_last, subject_last = got["last"], got["name_last"], got["subject_last"]
    np.testing.assert_array_equal(last, [len(i) - 1 for i in ids])
    name_end, subject_end, pronouns = _expected(data, people, entries, all_prompts, fmt)
    np.testing.assert_array_equal(name_last, _token_ending(tok, texts, name_end))
    np.testing.assert_array_equal(subject_last, _token_ending(tok, texts, subject_end))
    assert (subject_last < last).all() and (name_last <= subject_last).all()
    for k, p in enumerate(all_prompts):
        name = people[p.person].name
        piece = tok.decode([ids[k][name_last[k]]]).strip()
        assert piece and name.split()[-1].endswith(piece), (name, piece)
        if faithful_decode:  # byte-level: the ids up to a position's token decode to the text up to its end
            assert tok.decode(ids[k][1 : name_last[k] + 1]) == texts[k][: name_end[k]]
            assert tok.decode(ids[k][1 : subject_last[k] + 1]) == texts[k][: subject_end[k]]
        subject = tok.decode([ids[k][subject_last[k]]]).strip()
        if pronouns[k] is None:
            assert subject_last[k] == name_last[k] and subject == piece
        else:
            assert subject_last[k] > name_last[k]
            # A word tokenizer keeps the pronoun whole; a small BPE may split "Her" into "H" "er".
            assert pronouns[k].endswith(subject) if faithful_decode else subject == pronouns[k], (subject, pronouns[k])
    return {"prompts": len(all_prompts), "pronouns": sum(p is not None for p in pronouns)}


def _check(tok, preset, augment, faithful_decode=False):
    data, people, entries, all_prompts = _data(preset, augment)
    counts = {}
    for fmt in FORMATS:
        counts[fmt] = _check_format(tok, data, people, entries, all_prompts, fmt, faithful_decode)
    n = len(people)
    assert counts["bio_short"] == counts["qa"] == {"prompts": 6 * n, "pronouns": 0}
    # Only the entry's first sentence names the person, unless every sentence does.
    assert counts["bio_long"] == {"prompts": 6 * n, "pronouns": 0 if data.full_name else 5 * n}
    return data, people, all_prompts


@pytest.mark.parametrize(("preset", "augment"), CASES, ids=[f"{p}{'-' + a if a else ''}" for p, a in CASES])
def test_word_tokenizer_positions(preset, augment):
    _, _, entries, all_prompts = _data(preset, augment)
    tok = train_word_tokenizer(_corpus(entries, all_prompts))
    _check(tok, preset, augment)


@pytest.mark.parametrize("trim_offsets", [False, True])
@pytest.mark.parametrize("augment", ["", *AUGMENTED])
def test_byte_level_bpe_positions(augment, trim_offsets):
    _, people, entries, all_prompts = _data("cpu", augment)
    tok = _byte_level_bpe(_corpus(entries, all_prompts), trim_offsets)
    # The offsets differ as asked: with trimming the token " birth" starts at its b, else at its space.
    encoded = tok(["the birth"], return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(encoded["input_ids"][0])[-1] == "Ġbirth"
    assert encoded["offset_mapping"][0][-1] == ((4, 9) if trim_offsets else (3, 9))
    # Names are split: most last names take several tokens, so the last one is a real choice.
    pieces = [len(tok(" " + p.name.split()[-1], add_special_tokens=False)["input_ids"]) for p in people]
    assert sum(n > 1 for n in pieces) >= 0.6 * len(people), pieces
    _check(tok, "cpu", augment, faithful_decode=True)


def test_known_prompt_positions_and_asked_subsets():
    data, people, entries, all_prompts = _data("tiny", "")
    tok = train_word_tokenizer(_corpus(entries, all_prompts))
    by_index = {p.index: Person(**p.to_json()) for p in people}  # as read back from people.jsonl
    k = 1  # person 0, birth_city
    person = people[all_prompts[k].person]
    assert (person.index, all_prompts[k].attribute) == (0, "birth_city")
    got = {fmt: prompt_positions(tok, all_prompts, by_index, fmt) for fmt in FORMATS}
    words = {fmt: tok.convert_ids_to_tokens(encode_formats(tok, all_prompts)[fmt][k]) for fmt in FORMATS}
    first_name, last_name = person.name.split()
    pronoun = _PRONOUNS[person.gender][0]
    # "[BOS] First Last took birth in"
    assert words["bio_short"] == ["[BOS]", first_name, last_name, "took", "birth", "in"]
    assert {p: int(v[k]) for p, v in got["bio_short"].items()} == {"last": 5, "subject_last": 2, "name_last": 2}
    # "[BOS] What is the birth city of First Last ?"
    assert words["qa"][7:] == [first_name, last_name, "?"] and len(words["qa"]) == 10
    assert {p: int(v[k]) for p, v in got["qa"].items()} == {"last": 9, "subject_last": 8, "name_last": 8}
    # "[BOS] First Last ' s birthday is remembered on Month D , YYYY . He took birth in"
    assert words["bio_long"][:5] == ["[BOS]", first_name, last_name, "'", "s"]
    assert words["bio_long"][13:] == [".", pronoun, "took", "birth", "in"]
    assert {p: int(v[k]) for p, v in got["bio_long"].items()} == {"last": 17, "subject_last": 14, "name_last": 2}
    # Asking fewer positions gives those, in the order asked, with the same numbers.
    some = prompt_positions(tok, all_prompts, people, "bio_long", positions=("subject_last", "last"))
    assert list(some) == ["subject_last", "last"]
    np.testing.assert_array_equal(some["subject_last"], got["bio_long"]["subject_last"])
    with pytest.raises(FactrecallError, match="unknown position 'first'"):
        prompt_positions(tok, all_prompts, people, "qa", positions=("first",))


def _one_line(err: pytest.ExceptionInfo, *words: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def test_a_tokenizer_that_merges_the_name_with_its_possessive_is_refused():
    _, people, entries, all_prompts = _data("tiny", "")
    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # "Smith's" stays one word
    raw.train_from_iterator(_corpus(entries, all_prompts), trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    person = people[0]
    last_name = person.name.split()[-1]
    # The first prompt (birth_date) reads "<name>'s birthday is remembered on" in both BIO formats.
    for fmt in ("bio_short", "bio_long"):
        with pytest.raises(FactrecallError) as err:
            prompt_positions(tok, all_prompts, people, fmt, positions=("name_last",))
        _one_line(
            err, "person 0", repr(person.name), "birth_date", f"the {fmt} prompt", f'"{last_name}\'s"', "byte-level BPE"
        )
    # Four of the six questions end "<name>?": the "?" joins the name's token, which runs past the name
    # into no letter or digit, so it is taken (and is the last token too).
    got = prompt_positions(tok, all_prompts, people, "qa")
    ending = np.array([p.qa.endswith(people[p.person].name + "?") for p in all_prompts])
    assert ending.sum() == 4 * len(people)
    np.testing.assert_array_equal(got["name_last"][ending], got["last"][ending])
    assert (got["name_last"][~ending] < got["last"][~ending]).all()
    assert tok.convert_ids_to_tokens(encode_formats(tok, all_prompts)["qa"][0])[-1] == last_name + "?"
    # `last` alone needs no offsets and is computed all the same.
    assert (
        prompt_positions(tok, all_prompts, people, "bio_short", positions=("last",))["last"][0] == 5
    )  # no BOS: 6 words


def test_a_prompt_without_the_name_or_its_subject_is_refused():
    _, people, entries, all_prompts = _data("tiny", "")
    tok = train_word_tokenizer(_corpus(entries, all_prompts))
    k = 7  # person 1, birth_city
    p = all_prompts[k]
    other = people[0].name
    changed = list(all_prompts)
    changed[k] = dataclasses.replace(p, qa=p.qa.replace(people[1].name, other))
    with pytest.raises(FactrecallError) as err:
        prompt_positions(tok, changed, people, "qa")
    _one_line(err, "person 1", "birth_city", "the qa prompt", "does not hold the person's full name", "data again")
    # bio_long's last sentence whose subject is neither the name nor He/She.
    pronoun = _PRONOUNS[people[1].gender][0]
    assert p.bio_long.endswith(f" {pronoun} took birth in")
    changed[k] = dataclasses.replace(
        p, bio_long=p.bio_long[: -len("took birth in") - len(pronoun) - 1] + "They took birth in"
    )
    with pytest.raises(FactrecallError) as err:
        prompt_positions(tok, changed, people, "bio_long")
    _one_line(err, "person 1", "birth_city", "the bio_long prompt", "ends neither", "They took birth in")
    # name_last alone does not need the subject, and the name is still there.
    assert prompt_positions(tok, changed, people, "bio_long", positions=("name_last",))["name_last"][k] == 2
    # A person missing from the people given.
    with pytest.raises(FactrecallError) as err:
        prompt_positions(tok, all_prompts, people[:1], "qa")
    _one_line(err, "person 1", "not among the people given")


def test_a_name_that_ends_in_the_pronoun_is_ambiguous():
    spec = build_spec("tiny", data={"people": 2, "full_name": True})
    person = Person(0, "Li He", "male", "qa_in", "May 1, 1990", "Austin, TX", "Rice University", "nurse", "Acme", "O+")
    entries = bio_entries([person], spec.data, seed=0)
    all_prompts = prompts([person], entries)
    tok = train_word_tokenizer(_corpus(entries, all_prompts))
    # "Li He took birth in" ends with the named sentence and with "He took birth in" alike.
    assert all_prompts[1].bio_long.endswith(". Li He took birth in")
    with pytest.raises(FactrecallError) as err:
        prompt_positions(tok, all_prompts, [person], "bio_long")
    _one_line(err, "person 0", "'Li He'", "birth_city", "fits both the name and 'He'")
    # The first sentence, possessive, is not: "Li He's birthday" cannot be "His birthday".
    got = prompt_positions(tok, all_prompts[:1], [person], "bio_long")
    assert {p: int(v[0]) for p, v in got.items()} == {"last": 8, "subject_last": 2, "name_last": 2}


class _Offsetless:
    """A fast tokenizer's ids without usable offsets: none at all, or every one (0, 0)."""

    is_fast = True

    def __init__(self, tok, zeros: bool):
        self.tok, self.zeros = tok, zeros

    def __call__(self, texts, **kwargs):
        enc = dict(self.tok(texts, **kwargs))
        offsets = enc.pop("offset_mapping", None)
        if self.zeros and offsets is not None:
            enc["offset_mapping"] = [[(0, 0)] * len(row) for row in offsets]
        return enc


def test_a_tokenizer_without_offsets_is_refused():
    _, people, entries, all_prompts = _data("tiny", "")
    slow = ByT5Tokenizer()
    assert not slow.is_fast
    with pytest.raises(FactrecallError) as err:
        prompt_positions(slow, all_prompts, people, "qa")
    _one_line(err, "subject_last, name_last", "qa prompts", "ByT5Tokenizer", "no character offsets", "fast")
    # `last` alone is computed with any tokenizer: ByT5 reads bytes and ends with its EOS.
    got = prompt_positions(slow, all_prompts, people, "qa", positions=("last",))
    assert got["last"][0] == len(all_prompts[0].qa.encode())
    assert slow([all_prompts[0].qa])["input_ids"][0][-1] == slow.eos_token_id
    word = train_word_tokenizer(_corpus(entries, all_prompts))
    with pytest.raises(FactrecallError) as err:
        prompt_positions(_Offsetless(word, zeros=False), all_prompts, people, "bio_short")
    _one_line(err, "bio_short prompts", "no character offsets")
    with pytest.raises(FactrecallError) as err:
        prompt_positions(_Offsetless(word, zeros=True), all_prompts, people, "bio_short")
    _one_line(err, "person 0", "birth_date", "the bio_short prompt", "no token's offsets hold the end of")
