"""Probes on real dumped activations: they find the label where the model recalls it, their Δ are
the paper's formulas, the torch backends agree with scikit-learn, results are cached and never stale,
and `factrecall-jobs probe` prints and draws the same numbers as the Python API."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import store
from store import probes
from store.probes import ProbeSettings, accuracy, alignment, fit, summary, sweep, table
from tests.conftest import run_cli


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
        h = {f: torch.tensor(s.acts(f, row["layer"], "birth_date", model="mix"), dtype=torch.float32) for f in ("qa", "bio_long")}
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
    assert len(calls) == 2 * s.layers
    again = sweep(store.open(copy), "stage", settings)  # a new process would see the same
    assert again == first and len(calls) == 2 * s.layers  # served from the store: nothing fitted
    assert (copy / "probes" / probes.cache_key(s, "stage", settings) / "zarr.json").exists()
    changed = sweep(s, "stage", ProbeSettings(attribute="job", bio="bio_short", l2=0.5))
    assert len(calls) == 4 * s.layers  # a changed parameter is computed, not served
    assert changed != first
    assert sweep(s, "mix", settings) != first and len(calls) == 6 * s.layers  # another model too
    # A damaged entry (a kill mid-write, a hand edit) is computed again and rewritten, then served.
    entry = copy / "probes" / probes.cache_key(s, "stage", settings) / "zarr.json"
    entry.write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"rows": [')
    assert sweep(s, "stage", settings) == first and len(calls) == 8 * s.layers
    assert sweep(s, "stage", settings) == first and len(calls) == 8 * s.layers


def test_the_probe_command_prints_and_draws_what_the_api_returns(tiny_run, tmp_path, capsys, monkeypatch):
    from jobs import cli

    monkeypatch.setattr(cli.console, "width", 160)  # a wide terminal: cells unwrapped
    out = tmp_path / "fig.png"
    ws = tiny_run.parent.parent
    assert run_cli("--workspace", ws, "probe", tiny_run.name, "--attribute", "birth_date", "--bio", "short",
                   "--out", out, "--csv", tmp_path / "t.csv") == 0
    printed = capsys.readouterr().out.replace("\n", " ")
    df = table([store.open(tiny_run)], ["stage", "mix"], ProbeSettings(attribute="birth_date", bio="bio_short"),
               cache=False)  # computed here, not read back from what the command cached
    written = pd.read_csv(tmp_path / "t.csv")
    pd.testing.assert_frame_equal(written[df.columns], df, check_dtype=False)
    for model in ("stage", "mix"):
        assert f"{model}: probes for the first token of birth_date, BIO = bio_short" in printed
        top = df[(df.model == model)].iloc[-1]
        assert f"{top['acc_qa_wqa']:.1f}" in printed and f"{top['delta_rep']:.1f}" in printed
    image = plt.imread(out)
    assert image.shape[0] > 400 and image.shape[1] > 800
    # two runs are seeds: mean ± std
    assert run_cli("--workspace", ws, "probe", tiny_run.name, tiny_run.name, "--attribute", "birth_date",
                   "--bio", "short", "--out", out) == 0
    assert "±0.0" in capsys.readouterr().out
    agg = summary(table([store.open(tiny_run)] * 2, ["mix"], ProbeSettings(attribute="birth_date", bio="bio_short"), cache=False))
    assert (agg["runs"] == 2).all() and (agg["acc_qa_wqa_std"] == 0).all()


@pytest.mark.parametrize("argv, message", [
    (["--attribute", "age"], "unknown attribute 'age'"),
    (["--models", "qa"], "has no dumped model 'qa'"),
])
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


def test_the_cache_key_follows_the_code_not_its_comments():
    """Editing a comment or a docstring of store/probes.py keeps every cached sweep; a change of code
    computes them anew."""
    import inspect

    import store.probes as probes
    from store.probes import code_key

    source = inspect.getsource(probes)
    commented = source.replace('"""Linear probes over the store', '"""Linear probes (reworded) over the store', 1)
    commented = commented.replace("def accuracy(", "# a new comment\ndef accuracy(", 1)
    assert commented != source and code_key(commented) == code_key(source)
    changed = source.replace("return 100.0 * float(", "return 99.0 * float(", 1)
    assert changed != source and code_key(changed) != code_key(source)
