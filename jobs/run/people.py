"""Synthetic people (paper section 6.1): unique full names, a gender, and six attributes sampled
independently and uniformly from pools built with faker.

Everything is a function of the seed: each pool is drawn by its own seeded faker, de-duplicated,
and sorted (iterating a Python set would make pools differ between processes), and people are
drawn from the pools with a seeded numpy generator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from faker import Faker

from jobs.errors import SpecError
from jobs.run.files import read_rows
from jobs.run.spec import DataSpec
from jobs.words import ATTRIBUTES

BLOOD_TYPES = ("A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-")
_UNIVERSITY_KINDS = ("University", "College", "State University", "Institute of Technology")
_DATE_RANGE = (dt.date(1900, 1, 1), dt.date(2099, 12, 31))


@dataclass(frozen=True)
class Person:
    index: int
    name: str
    gender: str  # "female" | "male"
    split: str  # "qa_in" | "qa_out"
    birth_date: str
    birth_city: str
    university: str
    job: str
    employer: str
    blood_type: str

    def attribute(self, name: str) -> str:
        return getattr(self, name)

    def to_json(self) -> dict:
        return asdict(self)


def _format_date(day: dt.date) -> str:
    return f"{day.strftime('%B')} {day.day}, {day.year}"


def _university(fake: Faker) -> str:
    if fake.random.random() < 0.25:
        return f"University of {fake.city()}"
    return f"{fake.last_name()} {fake.random.choice(_UNIVERSITY_KINDS)}"


_DRAW = {
    "birth_date": lambda f: _format_date(f.date_between_dates(*_DATE_RANGE)),
    "birth_city": lambda f: f"{f.city()}, {f.state_abbr(include_territories=False)}",
    "university": _university,
    # Lower case, as in the paper's "work as a chartered public finance accountant".
    "job": lambda f: f.job().lower(),
    "employer": lambda f: f.company(),
}


def build_pools(spec: DataSpec, seed: int) -> dict[str, tuple[str, ...]]:
    """Attribute -> sorted tuple of `spec.pool_size` distinct values (blood type: the 8 types)."""
    pools: dict[str, tuple[str, ...]] = {"blood_type": BLOOD_TYPES}
    for offset, attribute in enumerate(ATTRIBUTES[:-1]):
        fake = Faker(spec.locale)
        fake.seed_instance(seed * 1000 + offset)
        values: dict[str, None] = {}
        since_new = 0  # draws since the last new value: faker has run out when many bring none
        while len(values) < spec.pool_size:
            before = len(values)
            values[_DRAW[attribute](fake)] = None
            since_new = 0 if len(values) > before else since_new + 1
            if since_new > max(2_000, 20 * len(values)):
                raise SpecError(
                    f"faker ({spec.locale}) gives only {len(values)} distinct values of {attribute}; "
                    f"lower data.pool_size below {len(values)}"
                )
        pools[attribute] = tuple(sorted(values))
    return pools


def _unique_names(n: int, genders: np.ndarray, locale: str, seed: int) -> list[str]:
    fake = Faker(locale)
    fake.seed_instance(seed * 1000 + 999)
    names: list[str] = []
    seen: set[str] = set()
    for gender in genders:
        for _ in range(10_000):
            first = fake.first_name_female() if gender == "female" else fake.first_name_male()
            name = f"{first} {fake.last_name()}"
            if name not in seen:
                break
        else:
            raise SpecError(f"faker ({locale}) ran out of unique names after {len(names)}; lower data.people")
        seen.add(name)
        names.append(name)
    return names


def generate_people(spec: DataSpec, seed: int) -> list[Person]:
    """`spec.people` people, the first `round(people * qa_in_fraction)` of a seeded permutation QA-in."""
    pools = build_pools(spec, seed)
    rng = np.random.default_rng(seed)
    n = spec.people
    genders = np.where(rng.integers(0, 2, n) == 0, "female", "male")
    picks = {a: rng.integers(0, len(pools[a]), n) for a in ATTRIBUTES}
    n_in = min(max(round(n * spec.qa_in_fraction), 1), n - 1)
    split = np.full(n, "qa_out", dtype=object)
    split[rng.permutation(n)[:n_in]] = "qa_in"
    names = _unique_names(n, genders, spec.locale, seed)
    return [
        Person(
            index=i,
            name=names[i],
            gender=str(genders[i]),
            split=str(split[i]),
            **{a: pools[a][int(picks[a][i])] for a in ATTRIBUTES},
        )
        for i in range(n)
    ]


def load_people(run_path: Path) -> dict[int, Person]:
    """The run's people by index, as the data step wrote them (data/people.jsonl)."""
    return {p.index: p for p in read_rows(Path(run_path) / "data" / "people.jsonl", Person)}
