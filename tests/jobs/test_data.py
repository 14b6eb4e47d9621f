"""People, BIO entries and prompts: the paper's section 6.1, deterministic for a seed."""

import re

from jobs.run.corpus import QUESTIONS, bio_entries, prompts
from jobs.run.people import BLOOD_TYPES, build_pools, generate_people
from jobs.run.spec import build_spec
from jobs.words import ATTRIBUTES


def _data(**data):
    spec = build_spec("tiny", data={"people": 200, "pool_size": 30, **data})
    people = generate_people(spec.data, seed=3)
    entries = bio_entries(people, spec.data, seed=3)
    return spec, people, entries, prompts(people, entries)


def test_people_are_deterministic_unique_and_split():
    spec, people, _, _ = _data()
    again = generate_people(spec.data, seed=3)
    assert people == again
    assert generate_people(spec.data, seed=4) != people
    names = [p.name for p in people]
    assert len(set(names)) == len(names) == 200
    # Full names only: two words, no titles or suffixes.
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][A-Za-z'-]+", n) for n in names), names
    assert sum(p.split == "qa_in" for p in people) == 100  # tiny keeps half QA-in
    pools = build_pools(spec.data, seed=3)
    assert pools["blood_type"] == BLOOD_TYPES
    for a in ATTRIBUTES[:-1]:
        assert len(pools[a]) == 30 and list(pools[a]) == sorted(pools[a])
    for p in people:
        for a in ATTRIBUTES:
            assert p.attribute(a) in pools[a]
    assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}", people[0].birth_date)
    assert re.fullmatch(r".+, [A-Z]{2}", people[0].birth_city)


def test_bio_entry_reads_like_the_papers_example():
    _, people, entries, _ = _data()
    p, e = people[0], entries[0]
    he, his = ("She", "her") if p.gender == "female" else ("He", "his")
    assert e.text == (
        f"{p.name}'s birthday is remembered on {p.birth_date}. {he} took birth in {p.birth_city}. "
        f"{he} took advantage of the diverse programs offered at {p.university}. "
        f"{he} was involved in work as a {p.job}. {he} aligned {his} professional ambitions with "
        f"{p.employer}. {he} has a blood type of {p.blood_type}."
    )


def test_full_name_names_the_person_in_every_sentence_and_bio_short_is_then_in_the_entry():
    _, people, entries, all_prompts = _data(full_name=True, permute=True)
    for e in entries[:20]:
        name = people[e.person].name
        sentences = [e.sentence(a) for a in e.order]
        assert all(s.startswith(name) for s in sentences), sentences
        assert not re.search(r"\b(He|She|His|Her)\b", e.text)
    # What the paper's BIO_short asks is now said word for word inside each entry.
    first = {}
    for e in entries:
        first.setdefault(e.person, e)
    assert all(f"{p.bio_short} {p.answer}." in first[p.person].text for p in all_prompts)
    # Without it, only the first sentence's BIO_short is in the entry.
    _, _, plain, plain_prompts = _data(permute=True)
    inside = sum(f"{p.bio_short} {p.answer}." in plain[p.person].text for p in plain_prompts)
    assert inside == len(plain)


def test_prompts_end_right_before_the_attribute_in_every_format():
    for options in (
        {},
        {"bio_templates": "multi", "permute": True, "bio_entries": 2},
        {"full_name": True, "bio_templates": "multi"},
    ):
        _, people, entries, all_prompts = _data(**options)
        assert len(all_prompts) == 6 * len(people)
        first = {}
        for e in entries:
            first.setdefault(e.person, e)
        for pr in all_prompts:
            person = people[pr.person]
            text = first[pr.person].text
            # BIO_long is a prefix of the entry and the answer comes next.
            assert text.startswith(pr.bio_long + " " + pr.answer + ".")
            # BIO_short: the subject with the same relation words, alone.
            assert pr.bio_short.startswith(person.name)
            assert pr.bio_long.endswith(pr.bio_short.split(person.name, 1)[1].lstrip("'s"))
            assert pr.qa == QUESTIONS[pr.attribute].format(name=person.name)
            assert pr.answer == person.attribute(pr.attribute)
            assert pr.split == person.split


def test_permutation_changes_order_but_not_facts():
    _, people, entries, _ = _data(permute=True)
    orders = {e.order for e in entries}
    assert len(orders) > 10
    for e in entries[:20]:
        for a in ATTRIBUTES:
            assert f" {people[e.person].attribute(a)}." in e.text
