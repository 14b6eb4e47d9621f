"""The first-token contract: prompt and answer split at a token boundary, in every format."""

import pytest
from tokenizers import Tokenizer, models, trainers
from transformers import PreTrainedTokenizerFast

from jobs.errors import TokenizerTemplateError
from jobs.run.corpus import bio_entries, prompts
from jobs.run.people import generate_people
from jobs.run.spec import build_spec
from jobs.run.tokenizer import encode_targets, train_word_tokenizer


def _prompts():
    spec = build_spec("tiny")
    people = generate_people(spec.data, seed=0)
    entries = bio_entries(people, spec.data, seed=0)
    return entries, prompts(people, entries)


def test_word_tokenizer_gives_every_prompt_a_first_token():
    entries, all_prompts = _prompts()
    tok = train_word_tokenizer([e.text for e in entries] + [f"{p.qa} {p.answer}." for p in all_prompts])
    targets = encode_targets(tok, all_prompts)
    assert tok.unk_token_id not in {t for tg in targets for t in tg.ids}
    for pr, tg in zip(all_prompts, targets):
        assert tg.ids[-1] == tok.convert_tokens_to_ids(".")
        assert tok.decode(tg.ids[:-1]).replace(" ", "") == pr.answer.replace(" ", "")
        assert tg.first_token_id == tg.ids[0]
        full = tok(pr.qa + " " + pr.answer + ".")["input_ids"]
        assert full == tok(pr.qa)["input_ids"] + list(tg.ids)


def test_a_tokenizer_that_merges_across_the_space_is_refused():
    entries, all_prompts = _prompts()
    # BPE with no pre-tokenizer learns merges across spaces ("a c" in "as a chartered").
    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.train_from_iterator(
        [e.text for e in entries] * 5, trainers.BpeTrainer(vocab_size=600, special_tokens=["[UNK]", "[PAD]"])
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
    with pytest.raises(TokenizerTemplateError, match="merges the .* prompt with its answer"):
        encode_targets(tok, all_prompts)
