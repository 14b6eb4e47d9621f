"""BIO entries, QA pairs, and the three prompt formats (paper sections 3.2 and 6.1).

For a person and an attribute, every prompt's next token is the attribute's first token:
- `bio_long`: the BIO entry up to the relation words right before the attribute, (s, r'),
- `bio_short`: the subject with the same relation words alone, (s, r),
- `qa`: the question, (r, s).
`prompts()` is the one place these are made; training, evaluation, the activation dump and the
probes all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.run.people import Person
from jobs.run.spec import DataSpec
from jobs.words import ATTRIBUTES

# Relation words per attribute. `{s}` is the subject (the full name in an entry's first sentence, and
# in every sentence with `full_name`, else a pronoun), `{s_poss}` its possessive, `{p_poss}` the
# possessive pronoun. The first template of each attribute is the paper's (section 6.1.1); the others
# are bioS-style paraphrases for `bio_templates = "multi"`. "as a" stays "a" before vowels too: "an"
# would leak the answer's first letter into the prompt, which the probes must not see.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "{s_poss} birthday is remembered on",
        "{s} was born on",
        "{s} came into this world on",
        "{s_poss} life journey began on",
    ),
    "birth_city": (
        "{s} took birth in",
        "{s} was born in",
        "{s} spent {p_poss} early years in",
        "{s} hails from",
    ),
    "university": (
        "{s} took advantage of the diverse programs offered at",
        "{s} graduated from",
        "{s} completed {p_poss} education at",
        "{s} received mentorship from the faculty of",
    ),
    "job": (
        "{s} was involved in work as a",
        "{s} earned a living as a",
        "{s} had a career as a",
        "{s} was employed as a",
    ),
    "employer": (
        "{s} aligned {p_poss} professional ambitions with",
        "{s} worked for",
        "{s} built {p_poss} career at",
        "{s} was on the payroll of",
    ),
    "blood_type": (
        "{s} has a blood type of",
        "{s_poss} blood type is",
        "{s} carries blood of type",
        "{s} was found to have blood type",
    ),
}

# Section 6.1.2: six fixed questions.
QUESTIONS: dict[str, str] = {
    "birth_date": "What is the birth date of {name}?",
    "birth_city": "What is the birth city of {name}?",
    "university": "Which university did {name} study?",
    "job": "What is the job of {name}?",
    "employer": "Which company did {name} work for?",
    "blood_type": "What is the blood type of {name}?",
}

_PRONOUNS = {"female": ("She", "Her", "her"), "male": ("He", "His", "his")}


@dataclass(frozen=True)
class BioEntry:
    """One biography of one person: sentence order, and per attribute the template used, the
    relation words (template filled with the subject) and the value."""

    person: int
    order: tuple[str, ...]
    templates: dict[str, str]
    relations: dict[str, str]
    values: dict[str, str]

    def sentence(self, attribute: str) -> str:
        return f"{self.relations[attribute]} {self.values[attribute]}."

    @property
    def text(self) -> str:
        return " ".join(self.sentence(a) for a in self.order)

    def prefix(self, attribute: str) -> str:
        """The entry up to the relation words before `attribute` (the BIO_long prompt)."""
        k = self.order.index(attribute)
        return " ".join([*(self.sentence(a) for a in self.order[:k]), self.relations[attribute]])


def _fill(template: str, person: Person, named: bool) -> str:
    nominative, possessive, pronoun_poss = _PRONOUNS[person.gender]
    subject = person.name if named else nominative
    subject_poss = f"{person.name}'s" if named else possessive
    return template.format(s=subject, s_poss=subject_poss, p_poss=pronoun_poss)


def bio_entries(people: list[Person], spec: DataSpec, seed: int) -> list[BioEntry]:
    """`spec.bio_entries` entries per person; fixed templates and order unless the spec augments."""
    rng = np.random.default_rng([seed, 1])
    entries = []
    for person in people:
        for _ in range(spec.bio_entries):
            order = tuple(str(a) for a in rng.permutation(ATTRIBUTES)) if spec.permute else ATTRIBUTES
            templates = {}
            for attribute in order:
                options = TEMPLATES[attribute] if spec.bio_templates == "multi" else TEMPLATES[attribute][:1]
                templates[attribute] = options[int(rng.integers(len(options)))]
            entries.append(
                BioEntry(
                    person=person.index,
                    order=order,
                    templates=templates,
                    relations={
                        a: _fill(templates[a], person, named=k == 0 or spec.full_name) for k, a in enumerate(order)
                    },
                    values={a: person.attribute(a) for a in order},
                )
            )
    return entries


def question(person: Person, attribute: str) -> str:
    return QUESTIONS[attribute].format(name=person.name)


@dataclass(frozen=True)
class Prompt:
    """The three prompts for one (person, attribute); each is followed by " " + answer + "."."""

    person: int
    attribute: str
    split: str
    bio_long: str
    bio_short: str
    qa: str
    answer: str

    def text(self, fmt: str) -> str:
        return getattr(self, fmt)


def prompts(people: list[Person], entries: list[BioEntry]) -> list[Prompt]:
    """One `Prompt` per (person, attribute), person-major in attribute order. BIO_long comes from the
    person's first entry; BIO_short uses the same relation words with the full name as subject."""
    first_entry = {}
    for entry in entries:
        first_entry.setdefault(entry.person, entry)
    out = []
    for person in people:
        entry = first_entry[person.index]
        for attribute in ATTRIBUTES:
            out.append(
                Prompt(
                    person=person.index,
                    attribute=attribute,
                    split=person.split,
                    bio_long=entry.prefix(attribute),
                    bio_short=_fill(entry.templates[attribute], person, named=True),
                    qa=question(person, attribute),
                    answer=person.attribute(attribute),
                )
            )
    return out
