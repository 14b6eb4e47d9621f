"""Interventions at a site (`factrecall-jobs patch`, jobs.run.patch): putting a model's own vector
back changes no decoded token, another person's vector moves the answer to theirs, the controls are
controls, the numbers are the per-person outcomes', and results are cached in the store and never stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import store
from jobs.run import model as models
from jobs.run.checkpoints import checkpoint_path
from jobs.run.evaluate import greedy_decode
from jobs.run.patch import from_end, load_run_inputs, patch
from jobs.run.sites import Patch
from jobs.words import ATTRIBUTES
from store import interventions
from store.interventions import COLUMNS, PatchSettings
from store.names import HOOKS
from tests.helpers import run_cli


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's tiny run (Stage and Mix, 2 layers, 16 people), whose store this test may write."""
    copy = tmp_path / "ws" / "runs" / tiny_run.name
    shutil.copytree(tiny_run, copy, symlinks=True)
    return copy


def test_putting_back_a_models_own_vector_changes_no_decoded_token(tiny_run):
    """The identity patch, for every model, layer and format: the store's vector (float16, dumped with
    right padding) put into the same prompt's pass (left padded, as evaluation decodes) leaves every
    decoded token as it was. It checks the hook point, the position and the store's order at once."""
    folder, tok, prompts, targets = load_run_inputs(tiny_run)
    s = store.open(tiny_run)
    a = ATTRIBUTES.index("job")
    index = np.arange(len(s.people)) * len(ATTRIBUTES) + a
    lengths = [len(targets[i].ids) + 2 for i in index]
    for name in ("untrained", "stage", "mix"):
        model = models.load_model(checkpoint_path(folder, name), torch.device("cpu")).eval()
        for fmt in ("bio_long", "bio_short", "qa"):
            texts = [prompts[i].text(fmt) for i in index]
            plain = greedy_decode(model, tok, texts, lengths)
            for layer in range(s.layers):
                own = torch.as_tensor(s.acts(fmt, layer, "job", model=name), dtype=torch.float32)
                seen = []
                with Patch(model, layer, "resid_mid") as hook:

                    def before(idx):
                        hook.set(lambda h, idx=idx: (seen.append((h - own[idx]).abs().max().item()), own[idx])[1])

                    patched = greedy_decode(model, tok, texts, lengths, before=before)
                assert patched == plain, (name, fmt, layer)
                assert seen and max(seen) < 0.05  # the hook saw the very vector the store holds (to float16)
        if name == "mix":  # and a vector that is not its own does change them (the hook is live)
            with Patch(model, s.layers - 1, "resid_mid") as hook:

                def swap(idx):
                    hook.set(lambda h, idx=idx: torch.flip(own[idx], [0]))

                assert greedy_decode(model, tok, texts, lengths, before=swap) != plain


def test_every_sites_own_vector_put_back_changes_no_decoded_token(run, tmp_path):
    """The identity patch at every hook, at the last token and at the subject's last token: a store of
    ten sites dumped in one pass (right padded), each vector put back into its own prompt's pass (left
    padded, at a position counted from the end) leaves every decoded token as it was; the hook saw the
    store's vector. It checks each site's hook, its position and its array in the store at once."""
    sites = [f"{hook}@{position}" for hook in HOOKS for position in ("last", "subject_last")]
    url = tmp_path / "sites.zarr"
    assert (
        run_cli(
            "--workspace",
            run.parent.parent,
            "dump",
            run.name,
            "--models",
            "mix",
            "--out",
            url,
            "--sites",
            ",".join(sites),
        )
        == 0
    )
    s = store.open(url)
    assert s.sites == tuple(sites) and s.dumped_models() == ["mix"]
    folder, tok, prompts, targets = load_run_inputs(run)
    a = ATTRIBUTES.index("job")
    index = np.arange(len(s.people)) * len(ATTRIBUTES) + a
    chosen = [prompts[i] for i in index]
    lengths = [len(targets[i].ids) + 2 for i in index]
    model = models.load_model(checkpoint_path(folder, "mix"), torch.device("cpu")).eval()
    layer = s.layers - 1
    for fmt in ("bio_long", "qa"):
        texts = [p.text(fmt) for p in chosen]
        plain = greedy_decode(model, tok, texts, lengths)
        for site in sites:
            hook, _, position = site.partition("@")
            own = torch.as_tensor(s.acts(fmt, layer, "job", model="mix", site=site), dtype=torch.float32)
            back = torch.as_tensor(from_end(tok, folder, chosen, fmt, position))
            seen = []
            with Patch(model, layer, hook) as patch:

                def before(idx):
                    patch.set(
                        lambda h, idx=idx: (seen.append((h - own[idx]).abs().max().item()), own[idx])[1], back[idx]
                    )

                assert greedy_decode(model, tok, texts, lengths, before=before) == plain, (fmt, site)
            assert seen and max(seen) < 0.05, (fmt, site, max(seen))
        # the sites differ: the subject's vector is not the last token's
        assert not np.allclose(
            s.acts(fmt, layer, "job", model="mix", site="mlp_out@last"),
            s.acts(fmt, layer, "job", model="mix", site="mlp_out@subject_last"),
        )


def test_patch_prints_draws_and_caches_the_transplant_and_its_controls(run, tmp_path, capsys):
    """`factrecall-jobs patch` end to end on the QA-in people, whose answers the tiny models know: the
    identity control equals the unpatched recall at every layer, a donor's hBIO_long at the last layer
    makes Mix answer with the donor's job, a random vector of the same norm recalls nothing, and the
    CSV, the store's cache and the Python API hold the same numbers."""
    ws = run.parent.parent
    out, csv = tmp_path / "patch.png", tmp_path / "patch.csv"
    assert run_cli("--workspace", ws, "patch", run.name, "--split", "qa_in", "--out", out, "--csv", csv) == 0
    printed = capsys.readouterr().out
    assert (
        "stage: exact match (%) for job" in printed
        and "mix: exact match" in printed
        and "from the store's cache" not in printed
    )
    assert out.stat().st_size > 10_000
    df = pd.read_csv(csv)
    assert sorted(set(df["model"])) == ["mix", "stage"] and sorted(set(df["layer"])) == [0, 1]
    assert (df["n_people"] == 8).all()
    assert (df["identity_qa"] == df["qa"]).all()  # the control changes nothing
    assert (df["random_qa"] <= df["qa"] - 50).all()  # a random vector of hBIO's norm: recall gone
    top = df[(df["model"] == "mix") & (df["layer"] == 1)].iloc[0]
    assert top["qa"] >= 75 and top["donor_rate"] >= 75 and top["donor_own"] <= 25  # the transplant took
    assert top["n_donor"] == 8  # every donor's job differs from the person's

    # The cache: the same numbers, from the store, without a model loaded.
    s = store.open(run)
    held = interventions.results(s, "job")
    assert {r["model"] for r in held} == {"stage", "mix"}
    for r in held:
        for row, outcome in zip(r["rows"], r["outcomes"]):
            for c in COLUMNS:  # every percentage is its people's outcomes
                assert row[c] == pytest.approx(100 * np.mean(outcome[c]), abs=0.01), c
            mine = df[(df["model"] == r["model"]) & (df["layer"] == row["layer"])].iloc[0]
            assert all(row[c] == pytest.approx(mine[c]) for c in COLUMNS)
        assert len(r["people"]) == 8 and all(p != d for p, d in zip(r["people"], r["donors"]))
    csv.unlink()
    assert run_cli("--workspace", ws, "patch", run.name, "--split", "qa_in", "--out", out, "--csv", csv) == 0
    assert capsys.readouterr().out.count("from the store's cache") == 2
    assert pd.read_csv(csv).equals(df)

    # Another setting is another result; a damaged one is computed again, as it was.
    again = patch(run, s, ["mix"], PatchSettings(split="qa_in", layers=(-1,), erase=False))
    [(result, hit)] = again
    assert not hit and [r["layer"] for r in result["rows"]] == [1]
    assert result["rows"][0]["donor_rate"] == top["donor_rate"] and np.isnan(result["rows"][0]["erase_qa"])
    for entry in (e for e in (run / "activations.zarr" / "interventions").iterdir() if e.is_dir()):
        (entry / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"rows": [')
    [(result, hit)] = patch(run, s, ["mix"], PatchSettings(split="qa_in"))
    assert not hit and result["rows"][1]["donor_rate"] == top["donor_rate"]
    [(_, hit)] = patch(run, s, ["mix"], PatchSettings(split="qa_in"))
    assert hit


def test_erasure_and_its_random_control_remove_the_same_number_of_directions(run):
    """LEACE removes one direction per class but one (here the QA-in people's jobs); the control
    removes as many random ones. On the tiny Mix at its last layer the attribute's directions take
    the answers away and random ones of that number leave them."""
    s = store.open(run)
    [(result, _)] = patch(run, s, ["mix"], PatchSettings(split="qa_in"))
    classes = len(set(s.labels("job", "qa_in")["label"]))
    last = result["rows"][-1]
    assert last["erase_rank"] == classes - 1
    assert last["erase_qa"] <= last["qa"] - 50 and last["erase_random_qa"] == last["qa"]


def test_a_result_cached_under_the_old_code_hash_key_is_computed_once_more_not_served(run):
    """A store whose interventions today's code cached (keys hashing jobs/run/patch.py's source): no
    such result can be proved to be what this code computes, so none is served, nor listed for the app
    (`results`, `latest`); each is computed once more, kept under its new key, and served from there."""
    import hashlib
    import json
    from dataclasses import asdict

    s = store.open(run)
    settings = PatchSettings(split="qa_in", layers=(-1,), erase=False)
    [(fresh, hit)] = patch(run, s, ["mix"], settings, cache=False)
    assert not hit and fresh["version"] == interventions.PATCH_VERSION and "code" not in fresh
    ident = {"code": "5e1f0ffee0a1", "store": s.meta.get("fingerprint"), "model": "mix", **asdict(settings)}
    old_key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    old = {k: v for k, v in fresh.items() if k != "version"} | {"code": "5e1f0ffee0a1"}
    assert interventions.store_cached(s, old_key, old) and interventions.cached(s, old_key) is not None
    assert interventions.results(s) == [] and interventions.latest(s, "job", "mix", "qa_in") is None

    [(result, hit)] = patch(run, s, ["mix"], settings)
    assert not hit and result["outcomes"] == fresh["outcomes"]  # computed once more
    [(again, hit)] = patch(run, s, ["mix"], settings)
    assert hit and again["outcomes"] == fresh["outcomes"]  # then served
    assert [r["key"] for r in interventions.results(s)] == [interventions.cache_key(s, "mix", settings)]
    assert interventions.cached(s, old_key) is not None  # the old entry, left as it was


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--attribute", "shoe_size"], "unknown attribute 'shoe_size': choose one of birth_date"),
        (["--layers", "5"], "layer 5 does not exist"),
        (["--models", "qa"], "has no dumped model 'qa'"),
        (["--people", "1"], "--people: 1 is out of range: give 2 or more"),
    ],
)
def test_bad_patch_requests_are_one_line_and_write_nothing(run, capsys, argv, says):
    ws = run.parent.parent
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code = run_cli("--workspace", ws, "patch", run.name, *argv)
    captured = capsys.readouterr()
    assert code != 0 and says in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_a_store_without_its_run_is_refused_in_one_line(run, tmp_path, capsys):
    """A patch runs the model: a bare store (no checkpoints beside it) is named as the problem."""
    bare = tmp_path / "bare.zarr"
    shutil.copytree(run / "activations.zarr", bare)
    assert run_cli("--workspace", run.parent.parent, "patch", str(bare)) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_readme_examples_of_probes_and_interventions_run(run, capsys):
    """The README's Python examples, as a reader pastes them, on a run whose interventions `patch` cached."""
    import ast
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert run_cli("--workspace", run.parent.parent, "patch", run.name, "--no-erase") == 0
    capsys.readouterr()
    seeds = 'runs = [store.open(f"workspace/runs/cpu-stage+mix-s{seed}") for seed in (0, 1, 2)]'
    probes = re.search(r"```python\n(# the probes example\n.*?)```", readme, re.S).group(1)
    assert seeds in probes
    space = {}
    exec(probes.replace(seeds, f"runs = [store.open({str(run)!r})] * 2"), space)
    printed = capsys.readouterr().out  # pandas shows the frame's corners: its last column is an interval's
    assert "[4 rows x 63 columns]" in printed and "sel_bio_wbio_hi" in printed
    assert len(space["found"]) == 4 and {f.model for f in space["found"]} == {"stage", "mix"}
    example = re.search(r"```python\n(# the interventions example\n.*?)```", readme, re.S).group(1)
    assert len(ast.parse(example).body) == 3  # three statements (ruff format may wrap the last one)
    space = {}
    exec(example.replace('"workspace/runs/cpu-stage+mix-s0"', repr(str(run))), space)
    assert [row["layer"] for row in space["r"]["rows"]] == [0, 1] and space["r"]["settings"]["erase"] is False
