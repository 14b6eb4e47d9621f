"""Linear probes over the store (paper section 3.2, Figures 3 and 4): feature and mechanism consistency.

A probe W maps h (one format, one layer, one attribute) to the attribute's first token. It is
trained on one set of people (default: QA in-distribution) and scored on another (default: QA
out-of-distribution). For each layer and BIO variant (bio_long or bio_short) a sweep fits W_QA on
QA vectors and W_BIO on BIO vectors and reports

    Acc(hQA·WQA)  Acc(hBIO·WQA)  Acc(hQA·WBIO)  Acc(hBIO·WBIO)
    delta_rep  = |Acc(hQA·WQA) - Acc(hBIO·WQA)|   (do both formats' features suit one probe?)
    delta_mech = |Acc(hQA·WBIO) - Acc(hQA·WQA)|   (do both probes read one format's features alike?)

and, beyond the paper, how aligned hBIO and hQA of the same person are: the mean cosine of the two
after centring each format over people, and linear CKA between the two matrices.

A probe is an affine map: the features are standardised with its training set's mean and spread,
then multiplied by W. Backends:
- `lbfgs` (default): multinomial logistic regression with an L2 penalty, full batch, L-BFGS, in torch;
- `ridge`: a closed-form ridge classifier on one-hot targets, one linear solve;
- `sklearn`: scikit-learn's LogisticRegression with the same penalty, the reference the others are tested against.

Results are cached in the store (group `probes`), keyed (`store.cache.result_key`) by the version of
the computation (`PROBE_VERSION`, bumped when a change alters the numbers), every setting, the model,
the store's own fingerprint and the libraries' versions, so a second request is instant and a changed
one is computed anew; a sweep cached under another key (another version, or the source-code hash
keys of earlier versions) is never served, but computed once more and kept under its new key. An
entry carries a digest of what it stores and is served only when the digest and every number check
out (`_valid`): one edited, cut or written before digests existed is computed anew and rewritten.

This module computes and caches sweeps; tables over them (frames, summaries over runs, bootstrap
intervals, cells as text) are store.probe_tables'.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from store.cache import result_key
from store.errors import StoreError
from store.names import PROBE_ACCURACIES, PROBE_CONTROLS, PROBE_SELECTIVITY
from store.probe_tables import Sweep, frame
from store.reader import ActivationStore
from store.settings import ProbeSettings
from store.validate import digest, digest_ok, rate

# The version of the computation a sweep's numbers come from (the probes' fit and scoring here, and the
# reading of the store's vectors and labels it goes through): part of every cached sweep's key
# (`cache_key`). Bump it when a change alters the numbers; tests/test_golden_results.py pins a tiny
# sweep's rows and this key, so a change of the numbers without a bump fails there.
PROBE_VERSION = 1
# What computes a probe besides this code: their major.minor versions are part of the key too.
LIBRARIES = ("torch", "numpy")
MAX_PARAMETERS = 1 << 26  # weights of one probe (hidden x classes); --classes vocab of a large model passes it


# -- one probe ------------------------------------------------------------------------------------
@dataclass
class Probe:
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor  # (hidden, classes)
    bias: torch.Tensor  # (classes,)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (((x - self.mean) / self.scale) @ self.weight + self.bias).argmax(1)


def fit(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, backend: str = "lbfgs", l2: float = 1e-3, max_iter: int = 200
) -> Probe:
    """A probe from features x (n, hidden) to classes y (n,) in [0, n_classes)."""
    mean = x.mean(0)
    scale = x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    n, d = z.shape
    if d * n_classes > MAX_PARAMETERS:
        raise StoreError(
            f"a probe of {d} x {n_classes} classes has {d * n_classes:,} weights, more than "
            f"{MAX_PARAMETERS:,}; use classes=observed (--classes observed)"
        )
    if backend == "ridge":
        onehot = F.one_hot(y, n_classes).to(z.dtype)
        target_mean = onehot.mean(0)
        gram = z.T @ z + l2 * n * torch.eye(d, dtype=z.dtype)
        return Probe(mean, scale, torch.linalg.solve(gram, z.T @ (onehot - target_mean)), target_mean)
    if backend == "sklearn":
        return Probe(mean, scale, *_sklearn(z, y, n_classes, l2, max_iter))
    # L-BFGS on mean cross-entropy + l2/2 |W|^2, its gradient written out (softmax minus one-hot):
    # no autograd graph per step.
    params = torch.zeros((d + 1) * n_classes, dtype=z.dtype)
    onehot = F.one_hot(y, n_classes).to(z.dtype)
    opt = torch.optim.LBFGS(
        [params],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-5,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure():
        weight, bias = params.view(d + 1, n_classes)[:d], params.view(d + 1, n_classes)[d]
        with torch.no_grad():
            logits = z @ weight + bias
            loss = (torch.logsumexp(logits, 1) - (logits * onehot).sum(1)).mean() + 0.5 * l2 * weight.square().sum()
            err = (torch.softmax(logits, 1) - onehot) / n
            params.grad = torch.cat([z.T @ err + l2 * weight, err.sum(0)[None]]).reshape(-1)
        return loss

    opt.step(closure)
    weight, bias = params.detach().view(d + 1, n_classes)[:d], params.detach().view(d + 1, n_classes)[d]
    return Probe(mean, scale, weight.clone(), bias.clone())


def _sklearn(
    z: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.linear_model import LogisticRegression  # the reference backend only: sklearn loads slowly

    present = np.unique(y.numpy())
    weight = torch.zeros(z.shape[1], n_classes, dtype=z.dtype)
    bias = torch.full((n_classes,), -1e9, dtype=z.dtype)
    if len(present) == 1:  # sklearn refuses one class: the probe always says it
        bias[present[0]] = 0.0
        return weight, bias
    model = LogisticRegression(C=1.0 / (l2 * len(z)), max_iter=max_iter * 5, tol=1e-6)
    model.fit(z.numpy(), y.numpy())
    coef = torch.as_tensor(model.coef_, dtype=z.dtype)
    intercept = torch.as_tensor(model.intercept_, dtype=z.dtype)
    if len(present) == 2:  # sklearn's binary form: one row for class 1
        coef, intercept = torch.stack([-coef[0] / 2, coef[0] / 2]), torch.stack([-intercept[0] / 2, intercept[0] / 2])
    weight[:, present] = coef.T
    bias[present] = intercept
    return weight, bias


def accuracy(probe: Probe, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((probe.predict(x) == y).double().mean()) if len(y) else float("nan")


def alignment(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean cosine of matching rows after centring each matrix over rows, and linear CKA."""
    a = (a - a.mean(0)).double()
    b = (b - b.mean(0)).double()
    cos = F.cosine_similarity(a, b, dim=1).mean()
    cka = (b.T @ a).square().sum() / ((a.T @ a).square().sum().sqrt() * (b.T @ b).square().sum().sqrt())
    return float(cos), float(cka)


# -- a sweep ----------------------------------------------------------------------------------------
def _rows(s: ActivationStore, split: str) -> np.ndarray:
    return np.arange(len(s.people)) if split == "all" else np.flatnonzero(s.split == split)


def _classes(s: ActivationStore, settings: ProbeSettings) -> tuple[np.ndarray, int]:
    """Each person's class index, and the number of classes."""
    labels = s.labels(settings.attribute)["label"].to_numpy()
    if settings.classes == "vocab":
        vocab = s.meta.get("vocab_size")
        if not vocab:
            raise StoreError("this store does not record the vocabulary size; use classes=observed")
        return labels, int(vocab)
    observed, index = np.unique(labels, return_inverse=True)
    return index, len(observed)


def control_labels(classes: np.ndarray, attribute: str) -> np.ndarray:
    """The control task's labels (Hewitt & Liang 2019): each person's attribute re-drawn at random
    from the attribute's values as they occur (the same marginal distribution), fixed per person and
    attribute, so that every model and layer of a store is probed against the same control."""
    seed = int.from_bytes(hashlib.sha256(f"control:{attribute}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).choice(classes, size=len(classes), replace=True)


def cache_key(s: ActivationStore, model: str, settings: ProbeSettings) -> str:
    """The key of `model`'s sweep of `s` with `settings` (`store.cache.result_key`): the probes' version,
    every setting, the store's fingerprint, the model and the libraries' versions; not the source code."""
    return result_key("probe", PROBE_VERSION, settings, s.meta.get("fingerprint"), model=model, libraries=LIBRARIES)


def sweep(
    s: ActivationStore,
    model: str,
    settings: ProbeSettings,
    *,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """One row per layer: the four accuracies, delta_rep, delta_mech, cosine, cka, and the counts."""
    layers = list(range(s.layers)) if settings.layers is None else [int(k) for k in settings.layers]
    wrong = [k for k in layers if not -s.layers <= k < s.layers]
    if wrong:
        raise StoreError(f"layer {wrong[0]} does not exist: this store has layers 0..{s.layers - 1}")
    layers = sorted({k % s.layers for k in layers})
    key = cache_key(s, model, settings)
    if cache and (hit := _cached(s, key)) is not None:
        return hit
    t0 = time.perf_counter()
    classes, n_classes = _classes(s, settings)
    train, test = _rows(s, settings.train_split), _rows(s, settings.test_split)
    if len(train) < 2:  # a probe's features are standardised over its training people
        raise StoreError(
            f"probes need at least 2 people to train on; {s.meta.get('run', s.url)} has {len(train)} in "
            f"{settings.train_split} (make a run with more people, or --train-split all)"
        )
    y_train, y_test = (
        torch.as_tensor(classes[train], dtype=torch.long),
        torch.as_tensor(classes[test], dtype=torch.long),
    )
    control = torch.as_tensor(control_labels(classes, settings.attribute), dtype=torch.long)
    c_train, c_test = control[train], control[test]
    out = []
    for i, layer in enumerate(layers):  # one layer in memory at a time
        qa, bio = (
            torch.as_tensor(
                s.acts(fmt, layer, settings.attribute, model=model, site=settings.site), dtype=torch.float32
            )
            for fmt in ("qa", settings.bio)
        )
        w_qa = fit(qa[train], y_train, n_classes, settings.backend, settings.l2, settings.max_iter)
        w_bio = fit(bio[train], y_train, n_classes, settings.backend, settings.l2, settings.max_iter)
        row = {
            "layer": layer,
            "acc_qa_wqa": accuracy(w_qa, qa[test], y_test),
            "acc_bio_wqa": accuracy(w_qa, bio[test], y_test),
            "acc_qa_wbio": accuracy(w_bio, qa[test], y_test),
            "acc_bio_wbio": accuracy(w_bio, bio[test], y_test),
        }
        row["delta_rep"] = abs(row["acc_qa_wqa"] - row["acc_bio_wqa"])
        row["delta_mech"] = abs(row["acc_qa_wbio"] - row["acc_qa_wqa"])
        row["cosine"], row["cka"] = alignment(bio, qa)
        # Each test person's outcome under each probe: what the intervals resample.
        correct = {
            "acc_qa_wqa": w_qa.predict(qa[test]) == y_test,
            "acc_bio_wqa": w_qa.predict(bio[test]) == y_test,
            "acc_qa_wbio": w_bio.predict(qa[test]) == y_test,
            "acc_bio_wbio": w_bio.predict(bio[test]) == y_test,
        }
        if settings.controls:
            c_qa = fit(qa[train], c_train, n_classes, settings.backend, settings.l2, settings.max_iter)
            c_bio = fit(bio[train], c_train, n_classes, settings.backend, settings.l2, settings.max_iter)
            correct.update(
                ctl_qa_wqa=c_qa.predict(qa[test]) == c_test,
                ctl_bio_wqa=c_qa.predict(bio[test]) == c_test,
                ctl_qa_wbio=c_bio.predict(qa[test]) == c_test,
                ctl_bio_wbio=c_bio.predict(bio[test]) == c_test,
            )
        for ctl, sel, acc in zip(PROBE_CONTROLS, PROBE_SELECTIVITY, PROBE_ACCURACIES):
            row[ctl] = 100.0 * float(correct[ctl].double().mean()) if ctl in correct and len(test) else float("nan")
            row[sel] = row[acc] - row[ctl]
        row.update(n_train=len(train), n_test=len(test), n_classes=n_classes)
        row["correct"] = {k: v.to(torch.uint8).tolist() for k, v in correct.items()}
        out.append(row)
        if progress is not None:
            progress(i + 1, len(layers))
    if cache:
        _store_cached(s, key, model, settings, out, time.perf_counter() - t0)
    return out


def cached(s: ActivationStore, model: str, settings: ProbeSettings) -> list[dict] | None:
    """The rows `sweep(s, model, settings)` left in the store's cache, or None: a look that computes
    nothing (what the TUI shows before a fit is asked for)."""
    return _cached(s, cache_key(s, model, settings))


def default_models(stores: Sequence[ActivationStore]) -> list[str]:
    """The models to probe when none are named: stage and mix where every store has them dumped,
    else every trained model all of them have (empty when they share none)."""
    dumped = [set(s.dumped_models()) for s in stores]
    return [m for m in ("stage", "mix") if all(m in d for d in dumped)] or [
        m for m in stores[0].models if m != "untrained" and all(m in d for d in dumped)
    ]


def check_request(
    stores: Sequence[ActivationStore], models: Sequence[str] | None, settings: ProbeSettings
) -> list[str]:
    """The models a table of `stores` probes (`models`, or `default_models`), after checking that every
    store has the attribute and every model dumped: one StoreError line saying what to do otherwise."""
    for s in stores:
        if settings.attribute not in s.attributes:
            raise StoreError(f"unknown attribute {settings.attribute!r}: choose one of {', '.join(s.attributes)}")
    chosen = list(models) if models else default_models(stores)
    if not chosen:
        raise StoreError("these stores share no dumped trained model; `factrecall-jobs dump RUN` writes them")
    for s in stores:
        dumped = set(s.dumped_models())
        missing = [m for m in chosen if m not in dumped]
        if missing:
            run = s.meta.get("run", s.url)
            raise StoreError(f"run {run} has no dumped model {missing[0]!r}; `factrecall-jobs dump {run}` writes it")
    return chosen


def sweeps(
    stores: Sequence[ActivationStore],
    models: Sequence[str],
    settings: ProbeSettings,
    *,
    cache: bool = True,
    cached_only: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> Iterator[Sweep]:
    """Every (store, model) sweep of a table, in table order (the CLI, the app and the report all
    assemble tables from these). `progress(layers done, layers in all, what)` after each layer fitted
    and each sweep found in the cache; it may raise to stop. With `cached_only`, nothing is fitted:
    the sweeps end at the first one the cache lacks."""
    total = sum(s.layers if settings.layers is None else len(settings.layers) for s in stores) * len(models)
    done = 0
    for s in stores:
        run = s.meta.get("run", s.url)
        layers = s.layers if settings.layers is None else len(settings.layers)
        for model in models:
            rows = cached(s, model, settings) if cache or cached_only else None
            hit = rows is not None
            if not hit:
                if cached_only:
                    return
                base = done
                rows = sweep(
                    s,
                    model,
                    settings,
                    cache=cache,
                    progress=None
                    if progress is None
                    else lambda k, n, base=base, what=f"{run} {model}": progress(
                        base + k, total, f"{what}: layer {k}/{n}"
                    ),
                )
            done += layers
            if hit and progress is not None:
                progress(done, total, f"{run} {model}: from the cache")
            yield Sweep(run, model, rows, hit)


def _cached(s: ActivationStore, key: str) -> list[dict] | None:
    try:
        group = zarr.open_group(s.url, mode="r", path=f"probes/{key}", zarr_format=3, use_consolidated=False)
        attrs = group.attrs.asdict()
    except Exception:  # noqa: BLE001 - absent, or damaged by a kill: computed again and rewritten
        return None
    if not (attrs.get("key") == key and digest_ok(attrs) and _valid(s, attrs.get("rows"))):
        return None  # absent, damaged by hand or by a kill, or from before digests: computed again and rewritten
    return attrs["rows"]


def _valid(s: ActivationStore, rows: object) -> bool:
    """Whether cached rows are a sweep's: one per layer of the store, each accuracy the share of its
    own test people's outcomes (so finite, within 0..100 and inside its interval), Δrep, Δmech and
    selectivity derived from them as `sweep` derives them, cosine and CKA within their ranges."""
    ints = ("layer", "n_train", "n_test", "n_classes")
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
        return False
    for r in rows:
        if not all(type(r.get(k)) is int and r[k] >= 0 for k in ints) or r["layer"] >= s.layers or r["n_classes"] < 1:
            return False
    if len({r["layer"] for r in rows}) != len(rows):
        return False
    for r in rows:
        correct, n = r.get("correct"), r["n_test"]
        if not (
            isinstance(correct, dict)
            and set(correct) <= {*PROBE_ACCURACIES, *PROBE_CONTROLS}
            and set(PROBE_ACCURACIES) <= set(correct)
        ):
            return False
        for column in (*PROBE_ACCURACIES, *PROBE_CONTROLS):
            value = r.get(column)
            if column in correct and not rate(value, correct[column], n):
                return False
            if column not in correct and not (isinstance(value, float) and np.isnan(value)):
                return False
        derived = {
            "delta_rep": abs(r["acc_qa_wqa"] - r["acc_bio_wqa"]),
            "delta_mech": abs(r["acc_qa_wbio"] - r["acc_qa_wqa"]),
            **{sel: r[acc] - r[ctl] for sel, acc, ctl in zip(PROBE_SELECTIVITY, PROBE_ACCURACIES, PROBE_CONTROLS)},
        }
        for column, want in derived.items():
            value = r.get(column)
            if not (isinstance(value, float) and (value == want or (math.isnan(value) and math.isnan(want)))):
                return False
        for column, low in (("cosine", -1.0), ("cka", 0.0)):
            value = r.get(column)
            if not (isinstance(value, float) and (math.isnan(value) or low - 1e-6 <= value <= 1.0 + 1e-6)):
                return False
    return True


def _store_cached(
    s: ActivationStore, key: str, model: str, settings: ProbeSettings, rows: list[dict], seconds: float
) -> None:
    """One group per result; its attributes (one JSON document, written whole) hold the parameters
    and the rows. A store the user cannot write to still answers; it just does not remember."""
    try:
        # "w": the entry is replaced whole, also one a kill or a hand left unreadable (opening it to add to it fails)
        group = zarr.open_group(s.url, mode="w", path=f"probes/{key}", zarr_format=3, use_consolidated=False)
        entry = {
            "key": key,
            "model": model,
            "settings": asdict(settings),
            "version": PROBE_VERSION,
            "seconds": round(seconds, 3),
            "rows": rows,
        }
        group.attrs.put({**entry, "digest": digest(entry)})
    except Exception:  # noqa: BLE001 - read-only or damaged: the result stands, it is just not remembered
        pass


def table(
    stores: Sequence[ActivationStore],
    models: Sequence[str],
    settings: ProbeSettings,
    *,
    cache: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
):
    """A tidy pandas DataFrame: one row per (run, model, layer) with every column of `sweep`."""
    return frame(sweeps(stores, models, settings, cache=cache, progress=progress))
