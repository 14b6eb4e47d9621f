"""Probes on real dumped activations: they find the label where the model recalls it, their Δ are
the paper's formulas, the torch backends agree with scikit-learn, results are cached and never stale,
and `factrecall-jobs probe` prints and draws the same numbers as the Python API."""

from dataclasses import asdict

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import store
from store import probes
from store.names import PROBE_ACCURACIES, PROBE_CONTROLS, PROBE_SELECTIVITY
from store.probe_tables import intervals, summary
from store.probes import ProbeSettings, Sweep, accuracy, alignment, fit, sweep, table
from tests.helpers import run_cli


def _gaussian_classes(n_classes=12, dim=48, per_class=40, seed=0, spread=0.8):
    """Overlapping Gaussian classes: a problem where probes differ a little, not a trivial one."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * spread
    y = np.repeat(np.arange(n_classes), per_class)
    x = centres[y] + rng.standard_normal((len(y), dim)) * 2.0 + 5.0  # off-centre, as activations are
    order = rng.permutation(len(y))
    return torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])


def test_the_torch_probes_match_scikit_learns_logistic_regression():
    x, y = _gaussian_classes(per_class=80)
    train, test = (x[:480], y[:480]), (x[480:], y[480:])  # held-out samples of the same classes
    l2 = 1e-2
    z_mean, z_scale = train[0].mean(0), train[0].std(0)
    reference = LogisticRegression(C=1 / (l2 * len(train[1])), max_iter=2000, tol=1e-8)
    reference.fit(((train[0] - z_mean) / z_scale).numpy(), train[1].numpy())
    ref_acc = 100 * reference.score(((test[0] - z_mean) / z_scale).numpy(), test[1].numpy())
    assert 40 < ref_acc < 95  # a real problem: neither trivial nor hopeless
    for backend in ("lbfgs", "sklearn", "ridge"):
        probe = fit(train[0], train[1], 12, backend=backend, l2=l2)
        acc = accuracy(probe, test[0], test[1])
        assert abs(acc - ref_acc) <= (2 if backend != "ridge" else 8), (backend, acc, ref_acc)
    # the L-BFGS probe is the same model as scikit-learn's: nearly every prediction agrees
    ours = fit(train[0], train[1], 12, backend="lbfgs", l2=l2).predict(test[0]).numpy()
    theirs = reference.predict(((test[0] - z_mean) / z_scale).numpy())
    assert (ours == theirs).mean() >= 0.97


@pytest.mark.parametrize("present", [[4], [1, 6], [0, 3, 5]])
def test_scikit_learns_probe_maps_its_classes_back_with_one_two_or_more_present(present):
    """sklearn fits only the classes it sees, in a binary form for two and refusing one; the probe
    must still score every class of the full set, absent ones never winning."""
    x, y = _gaussian_classes(n_classes=len(present), per_class=30, spread=3.0)
    y = torch.tensor(present)[y]
    probe = fit(x, y, 8, backend="sklearn")
    assert probe.weight.shape == (48, 8)
    assert set(probe.predict(x).tolist()) <= set(present)
    assert accuracy(probe, x, y) >= 90
    reference = LogisticRegression(C=1 / (1e-3 * len(y)), max_iter=1000, tol=1e-6) if len(present) > 1 else None
    if reference is not None:
        z = ((x - x.mean(0)) / x.std(0)).numpy()
        assert (probe.predict(x).numpy() == reference.fit(z, y.numpy()).predict(z)).all()


def test_alignment_is_one_for_identical_features_and_low_for_unrelated_ones():
    a = torch.randn(200, 32)
    cos, cka = alignment(a, a * 3 + 1)
    assert cos == pytest.approx(1.0) and cka == pytest.approx(1.0)
    cos, cka = alignment(a, torch.randn(200, 32))
    assert abs(cos) < 0.1 and cka < 0.3


def test_a_sweep_reports_the_papers_accuracies_and_deltas(tiny_run, tmp_path):
    s = store.open(tiny_run)
    settings = ProbeSettings(attribute="birth_date", bio="bio_long")
    rows = sweep(s, "mix", settings, cache=False)
    assert [r["layer"] for r in rows] == list(range(s.layers))
    labels = s.labels("birth_date")
    classes = np.unique(labels["label"], return_inverse=True)[1]
    train, test = np.flatnonzero(s.split == "qa_in"), np.flatnonzero(s.split == "qa_out")
    for row in rows:
        # by hand: fit W_QA on QA vectors and W_BIO on BIO_long vectors of QA-in people, score QA-out people
        h = {
            f: torch.tensor(s.acts(f, row["layer"], "birth_date", model="mix"), dtype=torch.float32)
            for f in ("qa", "bio_long")
        }
        y = torch.tensor(classes)
        w_qa = fit(h["qa"][train], y[train], int(classes.max()) + 1)
        w_bio = fit(h["bio_long"][train], y[train], int(classes.max()) + 1)
        by_hand = {
            "acc_qa_wqa": accuracy(w_qa, h["qa"][test], y[test]),
            "acc_bio_wqa": accuracy(w_qa, h["bio_long"][test], y[test]),
            "acc_qa_wbio": accuracy(w_bio, h["qa"][test], y[test]),
            "acc_bio_wbio": accuracy(w_bio, h["bio_long"][test], y[test]),
        }
        for key, value in by_hand.items():
            assert row[key] == pytest.approx(value)
        assert row["delta_rep"] == pytest.approx(abs(by_hand["acc_qa_wqa"] - by_hand["acc_bio_wqa"]))
        assert row["delta_mech"] == pytest.approx(abs(by_hand["acc_qa_wbio"] - by_hand["acc_qa_wqa"]))
        assert row["n_train"] == len(train) and row["n_test"] == len(test) and row["n_classes"] == classes.max() + 1


def test_a_probe_finds_the_label_where_the_model_recalls_it(tiny_run):
    """The tiny models recall every person's BIO facts: in their top layer a BIO_long probe trained on
    some people reads the birth date's first token of the others. Untrained, it cannot."""
    s = store.open(tiny_run)
    settings = ProbeSettings(attribute="birth_date", bio="bio_long")
    top = {m: sweep(s, m, settings, cache=False)[-1] for m in ("bio", "mix", "untrained")}
    chance = 100 / top["mix"]["n_classes"]
    assert top["bio"]["acc_bio_wbio"] >= 75 and top["mix"]["acc_bio_wbio"] >= 75
    assert top["untrained"]["acc_bio_wbio"] <= max(40, 2 * chance)


def test_results_are_cached_in_the_store_and_never_stale(tiny_run, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "acts.zarr"
    shutil.copytree(tiny_run / "activations.zarr", copy)
    s = store.open(copy)
    calls = []
    real_fit = probes.fit
    monkeypatch.setattr(probes, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    settings = ProbeSettings(attribute="job", bio="bio_short")
    first = sweep(s, "stage", settings)
    fits = 2 * s.layers  # two probes per layer and half a sweep: W_QA and W_BIO, and their control task's
    assert len(calls) == 2 * fits
    again = sweep(store.open(copy), "stage", settings)  # a new process would see the same
    assert again == first and len(calls) == 2 * fits  # served from the store: nothing fitted
    assert (copy / "probes" / probes.cache_key(s, "stage", settings) / "zarr.json").exists()
    changed = sweep(s, "stage", ProbeSettings(attribute="job", bio="bio_short", l2=0.5))
    assert len(calls) == 4 * fits  # a changed parameter is computed, not served
    assert changed != first
    assert sweep(s, "mix", settings) != first and len(calls) == 6 * fits  # another model too
    # A damaged entry (a kill mid-write, a hand edit) is computed again and rewritten, then served.
    entry = copy / "probes" / probes.cache_key(s, "stage", settings) / "zarr.json"
    entry.write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"rows": [')
    assert sweep(s, "stage", settings) == first and len(calls) == 8 * fits
    assert sweep(s, "stage", settings) == first and len(calls) == 8 * fits


def test_the_probe_command_prints_and_draws_what_the_api_returns(tiny_run, tmp_path, capsys, monkeypatch):
    from jobs import cli

    monkeypatch.setattr(cli.console, "width", 160)  # a wide terminal: cells unwrapped
    out = tmp_path / "fig.png"
    ws = tiny_run.parent.parent
    assert (
        run_cli(
            "--workspace",
            ws,
            "probe",
            tiny_run.name,
            "--attribute",
            "birth_date",
            "--bio",
            "short",
            "--out",
            out,
            "--csv",
            tmp_path / "t.csv",
        )
        == 0
    )
    printed = capsys.readouterr().out.replace("\n", " ")
    df = table(
        [store.open(tiny_run)], ["stage", "mix"], ProbeSettings(attribute="birth_date", bio="bio_short"), cache=False
    )  # computed here, not read back from what the command cached
    written = pd.read_csv(tmp_path / "t.csv")
    assert list(dict.fromkeys(written["model"])) == ["stage", "mix", "untrained"]  # the baseline, last
    pd.testing.assert_frame_equal(written[written.model != "untrained"][df.columns], df, check_dtype=False)
    assert "untrained (baseline: no fact learned yet): probes" in printed
    for model in ("stage", "mix"):
        assert f"{model}: probes for the first token of birth_date, BIO = bio_short" in printed
        top = df[(df.model == model)].iloc[-1]
        assert f"{top['acc_qa_wqa']:.1f}" in printed and f"{top['delta_rep']:.1f}" in printed
    image = plt.imread(out)
    assert image.shape[0] > 400 and image.shape[1] > 800
    # two runs are seeds: mean ± std
    assert (
        run_cli(
            "--workspace",
            ws,
            "probe",
            tiny_run.name,
            tiny_run.name,
            "--attribute",
            "birth_date",
            "--bio",
            "short",
            "--out",
            out,
        )
        == 0
    )
    assert "±0.0" in capsys.readouterr().out
    agg = summary(
        table([store.open(tiny_run)] * 2, ["mix"], ProbeSettings(attribute="birth_date", bio="bio_short"), cache=False)
    )
    assert (agg["runs"] == 2).all() and (agg["acc_qa_wqa_std"] == 0).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--attribute", "age"], "unknown attribute 'age'"),
        (["--models", "qa"], "has no dumped model 'qa'"),
    ],
)
def test_bad_probe_requests_get_one_line(tiny_run, capsys, argv, message):
    assert run_cli("--workspace", tiny_run.parent.parent, "probe", tiny_run.name, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_whole_vocabulary_as_classes(tiny_run):
    s = store.open(tiny_run)
    vocab = s.meta["vocab_size"]
    observed = sweep(s, "mix", ProbeSettings(attribute="birth_date"), cache=False)
    full = sweep(s, "mix", ProbeSettings(attribute="birth_date", classes="vocab"), cache=False)
    assert full[-1]["n_classes"] == vocab > observed[-1]["n_classes"]
    # classes no training person has cannot win: the same probe up to their (penalised) weights
    assert abs(full[-1]["acc_bio_wbio"] - observed[-1]["acc_bio_wbio"]) <= 12.5  # one test person of 8


def test_the_cache_key_follows_the_version_not_the_code(monkeypatch):
    """A cached sweep is kept under the probes' version, not their source: store/probes.py loaded again
    with a comment reworded and a line of code changed keys every sweep as before (that a change of
    the numbers comes with a version bump is tests/test_golden_results.py's to see); a bump changes it."""
    import importlib.util
    import inspect
    import sys
    from types import SimpleNamespace

    source = inspect.getsource(probes)
    edited = source.replace('"""Linear probes over the store', '"""Linear probes (reworded) over the store', 1)
    edited = edited.replace("def accuracy(", "# a new comment\ndef accuracy(", 1)
    edited = edited.replace("return 100.0 * float(", "return 99.0 * float(", 1)
    assert edited.count("99.0 * float(") == 1 and "(reworded)" in edited and "# a new comment" in edited
    spec = importlib.util.spec_from_loader("edited_probes", loader=None)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "edited_probes", copy)  # where its dataclasses look their names up
    exec(compile(edited, "edited_probes.py", "exec"), copy.__dict__)
    s = SimpleNamespace(meta={"fingerprint": "8e083df1ade938a5"})  # all a key reads of a store
    settings = ProbeSettings(attribute="job", layers=(1,))
    assert copy.accuracy is not probes.accuracy and copy.cache_key(s, "mix", settings) == probes.cache_key(
        s, "mix", settings
    )
    before = probes.cache_key(s, "mix", settings)
    monkeypatch.setattr(probes, "PROBE_VERSION", probes.PROBE_VERSION + 1)
    assert probes.cache_key(s, "mix", settings) != before


def _old_scheme_key(s, model: str, settings: ProbeSettings) -> str:
    """A sweep's key as factrecall made it before versions: a hash of store/probes.py's code (here one
    such hash) and of the libraries, beside the settings, the store and the model."""
    import hashlib
    import json
    from dataclasses import asdict

    ident = {"code": "3f1c0ffee0a1", "store": s.meta.get("fingerprint"), "model": model, **asdict(settings)}
    if settings.layers is None:
        ident.pop("layers")
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def test_a_sweep_cached_under_the_old_code_hash_key_is_computed_once_more_not_served(tiny_run, tmp_path, monkeypatch):
    """A store whose cache today's code (keys hashing store/probes.py's source) filled: its sweeps
    cannot be proved to be what this code computes (the code they came from is not known), so none is
    served; each is fitted once more, kept under its new key, and served from there. The old entry is
    left as it was (a store the user cannot write to still answers)."""
    import shutil

    import zarr

    from store.validate import digest

    copy = tmp_path / "acts.zarr"
    shutil.copytree(tiny_run / "activations.zarr", copy)
    s = store.open(copy)
    settings = ProbeSettings(attribute="job", layers=(-1,))
    rows = sweep(s, "mix", settings, cache=False)
    old_key = _old_scheme_key(s, "mix", settings)
    assert old_key != probes.cache_key(s, "mix", settings)
    wrong = [{**rows[0], "cosine": 0.5}]  # a valid entry, and one that could not pass for a new fit
    entry = {"key": old_key, "model": "mix", "settings": asdict(settings), "code": "3f1c0ffee0a1"}
    entry |= {"seconds": 1.0, "rows": wrong}
    group = zarr.open_group(str(copy), mode="w", path=f"probes/{old_key}", zarr_format=3, use_consolidated=False)
    group.attrs.put({**entry, "digest": digest(entry)})
    assert probes._cached(s, old_key) == wrong  # as today's code would serve it

    calls = []
    real_fit = probes.fit
    monkeypatch.setattr(probes, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    assert probes.cached(s, "mix", settings) is None  # what the app looks at: nothing yet
    assert sweep(s, "mix", settings) == rows and len(calls) == 4  # fitted once more: W_QA, W_BIO, their controls'
    assert sweep(store.open(copy), "mix", settings) == rows and len(calls) == 4  # then served
    assert probes.cached(s, "mix", settings) == rows
    assert probes._cached(s, old_key) == wrong  # the old entry, untouched and never read


def test_the_control_task_is_near_chance_and_selectivity_is_what_is_left(tiny_run):
    """Hewitt & Liang's control: the same people's vectors, their job re-drawn at random (fixed per
    person), fitted and scored as the real probe. On a trained model it reads about what a constant
    guess would, while the real probe reads the job: selectivity is the difference, row by row."""
    s = store.open(tiny_run)
    classes, _ = probes._classes(s, ProbeSettings())
    control = probes.control_labels(classes, "job")
    assert np.array_equal(control, probes.control_labels(classes, "job"))  # fixed per person
    assert set(control) <= set(classes) and not np.array_equal(control, classes)
    test = np.flatnonzero(s.split == "qa_out")
    chance = 100 * np.bincount(control[test]).max() / len(test)  # always saying the commonest control label
    rows = sweep(s, "mix", ProbeSettings(attribute="job"), cache=False)
    for row in rows:
        for acc, ctl, sel in zip(PROBE_ACCURACIES, PROBE_CONTROLS, PROBE_SELECTIVITY):
            assert row[sel] == pytest.approx(row[acc] - row[ctl])
            assert row[ctl] == pytest.approx(100 * np.mean(row["correct"][ctl]))
    controls = [row[c] for row in rows for c in PROBE_CONTROLS]
    assert np.mean(controls) <= chance + 10, (controls, chance)
    assert rows[-1]["acc_bio_wbio"] >= 75 and rows[-1]["sel_bio_wbio"] >= 40
    assert all(
        np.isnan(r["ctl_qa_wqa"]) for r in sweep(s, "mix", ProbeSettings(attribute="job", controls=False), cache=False)
    )


def _simulated(run: str, p: float, n: int, rng) -> Sweep:
    """A sweep of one layer whose test people each recall with probability p, under every probe."""
    correct = {k: (rng.random(n) < p).astype(int).tolist() for k in (*PROBE_ACCURACIES, *PROBE_CONTROLS)}
    row = {"layer": 0, "n_test": n, "correct": correct}
    return Sweep(run, "mix", [row], False)


def test_bootstrap_intervals_cover_the_truth_and_the_spread_between_seeds():
    """The person-level bootstrap: a run's 95% interval covers the accuracy its people were drawn
    from about 95% of the time, and where the seeds differ by more than their people do, the interval
    over several seeds is wider than one over the same people pooled into one run, and covers every
    seed's own accuracy."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(200):
        lo, hi = intervals([_simulated(f"r{i}", 0.6, 200, rng)], "mix", [0], resamples=1000)["acc_qa_wqa"]
        covered += lo <= 60.0 <= hi
    assert 0.89 <= covered / 200 <= 0.99, covered
    # Seeds that differ only in their people (the spread one run's interval stands for): one seed's
    # interval holds another seed's accuracy about 83% of the time (two draws' difference has twice
    # the variance of one).
    same = [_simulated(f"t{i}", 0.6, 200, rng) for i in range(30)]
    value = [100 * np.mean(one.rows[0]["correct"]["acc_qa_wqa"]) for one in same]
    bounds = [intervals([one], "mix", [0], resamples=1000)["acc_qa_wqa"] for one in same]
    held = np.mean([lo <= value[j] <= hi for i, (lo, hi) in enumerate(bounds) for j in range(len(same)) if j != i])
    assert 0.75 <= held <= 0.92, held
    # Seeds that differ by more than their people do: the interval over seeds is the wider for it.
    seeds = [_simulated(f"s{i}", p, 200, rng) for i, p in enumerate((0.45, 0.6, 0.75))]
    per_seed = [100 * np.mean(one.rows[0]["correct"]["acc_qa_wqa"]) for one in seeds]
    lo, hi = intervals(seeds, "mix", [0])["acc_qa_wqa"]
    assert lo < np.mean(per_seed) < hi and hi - lo > (max(per_seed) - min(per_seed)) / 2
    pooled = Sweep(
        "all",
        "mix",
        [
            {
                "layer": 0,
                "n_test": 600,
                "correct": {
                    k: sum((one.rows[0]["correct"][k] for one in seeds), []) for k in seeds[0].rows[0]["correct"]
                },
            }
        ],
        False,
    )
    p_lo, p_hi = intervals([pooled], "mix", [0])["acc_qa_wqa"]
    assert hi - lo > 2 * (p_hi - p_lo)
    # Δs are resampled with their pairing: identical probes give a Δ interval of exactly zero.
    twin = Sweep(
        "same",
        "mix",
        [
            {
                "layer": 0,
                "n_test": 50,
                "correct": {k: seeds[0].rows[0]["correct"]["acc_qa_wqa"][:50] for k in seeds[0].rows[0]["correct"]},
            }
        ],
        False,
    )
    assert intervals([twin], "mix", [0])["delta_rep"] == (0.0, 0.0)
