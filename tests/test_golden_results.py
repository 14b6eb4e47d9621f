"""Golden results: the rows of one tiny probe sweep and one tiny patch, pinned.

A cached result is served for as long as its key is unchanged, and the key no longer hashes source
code: it holds an explicit version of the computation (`PROBE_VERSION` in store/probes.py,
`PATCH_VERSION` in store/interventions.py). These tests hold the two together. Each pins the rows
the code computes on the session's tiny run (seed 0, Stage and Mix, 2 layers, 16 people: 8 QA-in,
8 QA-out), to 4 decimals where a number is a float, and the outcome of every person exactly.

- a change that alters the numbers fails the rows test: bump the version (the key test then fails
  too) and write the new rows and the new key here, in the same commit;
- a change that keeps them (a comment, a table helper, a refactor) fails neither.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import store
from jobs.run.patch import patch
from store import cache, interventions, probes
from store.interventions import PatchSettings
from store.probes import ProbeSettings, sweep

TOLERANCE = 1e-4  # floats are pinned to 4 decimals
# The tiny run the rows were computed on (its store's fingerprint covers its models' weights): where
# the tiny run itself changes (its preset, its training), the rows below are of another store.
TINY_STORE = "8e083df1ade938a5"
# The libraries' versions the probe key was pinned with (the key holds their major.minor versions).
LIBRARIES = {"torch": "2.13", "numpy": "2.4"}
PROBE_KEY = "2afc616601a805a2e35f"  # probes.cache_key(TINY_STORE, "mix", PROBE_SETTINGS), PROBE_VERSION 1
# Both keys changed when settings gained `site` (the settings are hashed whole); the rows did not.
PATCH_KEY = "232ab065c2532033c4b7"  # interventions.cache_key(TINY_STORE, "mix", PATCH_SETTINGS), PATCH_VERSION 1

PROBE_SETTINGS = ProbeSettings(attribute="birth_date")  # BIO_long, QA-in -> QA-out, L-BFGS, controls
PROBE_ROWS = [  # store.probes.sweep(tiny run, "mix", PROBE_SETTINGS)
    {
        "layer": 0,
        **{"acc_qa_wqa": 62.5, "acc_bio_wqa": 75.0, "acc_qa_wbio": 50.0, "acc_bio_wbio": 87.5},
        **{"delta_rep": 12.5, "delta_mech": 12.5, "cosine": 0.8710, "cka": 0.8303},
        **{"ctl_qa_wqa": 12.5, "ctl_bio_wqa": 12.5, "ctl_qa_wbio": 12.5, "ctl_bio_wbio": 0.0},
        **{"sel_qa_wqa": 50.0, "sel_bio_wqa": 62.5, "sel_qa_wbio": 37.5, "sel_bio_wbio": 87.5},
        **{"n_train": 8, "n_test": 8, "n_classes": 6},
        "correct": {
            "acc_qa_wqa": [1, 1, 0, 0, 1, 1, 0, 1],
            "acc_bio_wqa": [1, 1, 1, 0, 1, 0, 1, 1],
            "acc_qa_wbio": [1, 0, 0, 0, 1, 1, 0, 1],
            "acc_bio_wbio": [1, 1, 1, 0, 1, 1, 1, 1],
            "ctl_qa_wqa": [0, 0, 0, 0, 0, 0, 1, 0],
            "ctl_bio_wqa": [1, 0, 0, 0, 0, 0, 0, 0],
            "ctl_qa_wbio": [0, 0, 0, 0, 0, 0, 1, 0],
            "ctl_bio_wbio": [0, 0, 0, 0, 0, 0, 0, 0],
        },
    },
    {
        "layer": 1,
        **{"acc_qa_wqa": 75.0, "acc_bio_wqa": 87.5, "acc_qa_wbio": 62.5, "acc_bio_wbio": 87.5},
        **{"delta_rep": 12.5, "delta_mech": 12.5, "cosine": 0.8744, "cka": 0.9155},
        **{"ctl_qa_wqa": 25.0, "ctl_bio_wqa": 25.0, "ctl_qa_wbio": 37.5, "ctl_bio_wbio": 12.5},
        **{"sel_qa_wqa": 50.0, "sel_bio_wqa": 62.5, "sel_qa_wbio": 25.0, "sel_bio_wbio": 75.0},
        **{"n_train": 8, "n_test": 8, "n_classes": 6},
        "correct": {
            "acc_qa_wqa": [1, 1, 1, 0, 1, 1, 0, 1],
            "acc_bio_wqa": [1, 1, 1, 0, 1, 1, 1, 1],
            "acc_qa_wbio": [1, 0, 1, 0, 1, 1, 0, 1],
            "acc_bio_wbio": [1, 1, 1, 0, 1, 1, 1, 1],
            "ctl_qa_wqa": [0, 0, 0, 1, 0, 0, 1, 0],
            "ctl_bio_wqa": [1, 0, 0, 1, 0, 0, 0, 0],
            "ctl_qa_wbio": [0, 0, 0, 1, 1, 0, 1, 0],
            "ctl_bio_wbio": [0, 0, 0, 1, 0, 0, 0, 0],
        },
    },
]

PATCH_SETTINGS = PatchSettings(split="qa_in", layers=(-1,))  # the last layer, every column, LEACE too
PATCH_PEOPLE = [1, 2, 4, 5, 7, 10, 14, 15]
PATCH_DONORS = [7, 7, 14, 15, 1, 2, 15, 14]
PATCH_ROWS = [  # jobs.run.patch.patch(tiny run, ["mix"], PATCH_SETTINGS)
    {
        "layer": 1,
        **{"qa": 100.0, "bio_long_qa": 100.0, "bio_short_qa": 87.5, "identity_qa": 100.0},
        **{"donor_own": 0.0, "donor_rate": 100.0, "random_qa": 0.0, "bio": 100.0, "qa_bio_long": 100.0},
        **{"erase_qa": 37.5, "erase_bio": 37.5, "erase_random_qa": 100.0},
        **{"n_people": 8, "n_donor": 8, "erase_rank": 5},
    }
]
PATCH_OUTCOMES = [
    {
        "qa": [1, 1, 1, 1, 1, 1, 1, 1],
        "bio_long_qa": [1, 1, 1, 1, 1, 1, 1, 1],
        "bio_short_qa": [1, 0, 1, 1, 1, 1, 1, 1],
        "identity_qa": [1, 1, 1, 1, 1, 1, 1, 1],
        "donor_own": [0, 0, 0, 0, 0, 0, 0, 0],
        "donor_rate": [1, 1, 1, 1, 1, 1, 1, 1],
        "random_qa": [0, 0, 0, 0, 0, 0, 0, 0],
        "bio": [1, 1, 1, 1, 1, 1, 1, 1],
        "qa_bio_long": [1, 1, 1, 1, 1, 1, 1, 1],
        "erase_qa": [0, 1, 0, 1, 0, 0, 1, 0],
        "erase_bio": [0, 1, 0, 1, 0, 0, 1, 0],
        "erase_random_qa": [1, 1, 1, 1, 1, 1, 1, 1],
    }
]


def _same_rows(got: list[dict], want: list[dict], where: str) -> None:
    """Every pinned column of every row, floats to TOLERANCE, the rest exactly; one message naming the cell."""
    assert len(got) == len(want), f"{where}: {len(got)} rows, the golden ones are {len(want)}"
    for row, golden in zip(got, want):
        for column, value in golden.items():
            assert column in row, f"{where} layer {golden['layer']}: no column {column}"
            if isinstance(value, float):
                assert row[column] == pytest.approx(value, abs=TOLERANCE), (where, golden["layer"], column)
            else:
                assert row[column] == value, (where, golden["layer"], column)


def _golden_message(s, what: str) -> str:
    return (
        f"the golden {what} rows are of store {TINY_STORE}; this tiny run's is {s.meta['fingerprint']}. If the "
        "code that computes them changed the numbers, bump its version and pin the new rows and key here."
    )


def test_a_tiny_probe_sweep_computes_the_golden_rows(tiny_run):
    s = store.open(tiny_run)
    rows = sweep(s, "mix", PROBE_SETTINGS, cache=False)
    try:
        _same_rows(rows, PROBE_ROWS, "probe sweep")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{_golden_message(s, 'probe')}") from None


def test_a_tiny_patch_computes_the_golden_rows(tiny_run):
    s = store.open(tiny_run)
    [(result, hit)] = patch(tiny_run, s, ["mix"], PATCH_SETTINGS, device="cpu", cache=False)
    assert not hit
    try:
        assert result["people"] == PATCH_PEOPLE and result["donors"] == PATCH_DONORS
        _same_rows(result["rows"], PATCH_ROWS, "patch")
        assert result["outcomes"] == PATCH_OUTCOMES
    except AssertionError as err:
        raise AssertionError(f"{err}\n{_golden_message(s, 'patch')}") from None


def test_the_golden_results_are_kept_under_pinned_keys(monkeypatch):
    """The keys the golden rows' results are cached under, for the tiny store's fingerprint: they change
    only with what they name (the version, a setting, the model, the store, the libraries' major.minor),
    never with the source code. A bump of PROBE_VERSION or PATCH_VERSION fails here: pin the new key
    with the new rows."""
    monkeypatch.setattr(cache, "library_version", LIBRARIES.__getitem__)
    tiny = SimpleNamespace(meta={"fingerprint": TINY_STORE})  # all a key reads of a store
    assert probes.PROBE_VERSION == 1 and interventions.PATCH_VERSION == 1
    assert probes.cache_key(tiny, "mix", PROBE_SETTINGS) == PROBE_KEY
    assert interventions.cache_key(tiny, "mix", PATCH_SETTINGS) == PATCH_KEY
