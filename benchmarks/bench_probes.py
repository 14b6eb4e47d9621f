"""Probe speed and accuracy against scikit-learn's LogisticRegression, measured in the same run:

- one probe (QA vectors of the top layer, QA-in people -> QA-out people) per backend, on a trained
  run's store: accuracy and fit time, against LogisticRegression with the same L2 penalty on the same
  standardised features;
- a whole sweep (every layer x 4 accuracies x both BIO variants, one attribute, one model), uncached;
- the paper's scale on synthetic vectors of its shape (5,000 training people, hidden 3,072, 1,000
  classes): seconds per layer (3 probe fits: W_QA, W_BIO_long, W_BIO_short).

    python benchmarks/bench_probes.py --run workspace/runs/cpu-stage+mix-s0 [--skip-paper]

Prints a markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from timing import timed

import store
from store.probe_tables import frame, summary
from store.probes import ProbeSettings, Sweep, accuracy, fit, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run with a dumped store (e.g. the main job's)")
    parser.add_argument("--model", default="mix")
    parser.add_argument("--attribute", default="job")
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper-scale synthetic timing")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    s = store.open(args.run)
    labels = s.labels(args.attribute)["label"].to_numpy()
    classes = np.unique(labels, return_inverse=True)[1]
    n_classes = int(classes.max()) + 1
    train, test = np.flatnonzero(s.split == "qa_in"), np.flatnonzero(s.split == "qa_out")
    rows = []
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} CPU threads, torch "
        f"{torch.__version__}. Store: {args.run}, model {args.model}, attribute {args.attribute}: {len(train)} "
        f"train / {len(test)} test people, {n_classes} classes, hidden {s.hidden}, l2 1e-3 (sklearn C = 1/(l2 n)).\n"
    )
    print("| measure | factrecall | baseline (scikit-learn LogisticRegression, tol 1e-6, unless said) | ratio |")
    print("|---|---|---|---|")
    for layer in (0, s.layers - 1):
        x = torch.tensor(s.acts("qa", layer, args.attribute, model=args.model), dtype=torch.float32)
        y = torch.tensor(classes)
        t_ref, ref = timed(lambda: fit(x[train], y[train], n_classes, backend="sklearn"))
        acc_ref = accuracy(ref, x[test], y[test])
        # scikit-learn as a researcher calls it: its default tolerance (1e-4) and iteration cap
        from sklearn.linear_model import LogisticRegression

        mean, scale = x[train].mean(0), x[train].std(0)
        z, zt = ((x[train] - mean) / scale).numpy(), ((x[test] - mean) / scale).numpy()
        t_def, default = timed(lambda: LogisticRegression(C=1 / (1e-3 * len(train))).fit(z, y[train].numpy()))
        acc_def = 100 * default.score(zt, y[test].numpy())
        for backend in ("lbfgs", "ridge"):
            t, probe = timed(lambda: fit(x[train], y[train], n_classes, backend=backend))
            acc = accuracy(probe, x[test], y[test])
            rows.append((layer, backend, acc, acc_ref, t, t_ref))
            print(
                f"| layer {layer}, Acc(hQA·WQA) with `{backend}`: accuracy, % | {acc:.1f} | {acc_ref:.1f} | "
                f"{acc - acc_ref:+.1f} points |"
            )
            print(f"| layer {layer}, `{backend}` fit: seconds | {t:.4f} | {t_ref:.4f} | {t_ref / t:.1f}x faster |")
            print(
                f"| layer {layer}, `{backend}` against scikit-learn's defaults (tol 1e-4): accuracy, seconds | "
                f"{acc:.1f}, {t:.4f} | {acc_def:.1f}, {t_def:.4f} | {acc - acc_def:+.1f} points, "
                f"{t_def / t:.1f}x faster |"
            )
    sweeps = {}
    for backend in ("lbfgs", "ridge", "sklearn"):
        for bio in ("bio_long", "bio_short"):
            settings = ProbeSettings(attribute=args.attribute, bio=bio, backend=backend, controls=False)
            t0 = time.perf_counter()
            sweep(s, args.model, settings, cache=False)
            t_sweep = time.perf_counter() - t0
            sweeps[backend, bio] = t_sweep
            if backend == "sklearn":
                ours = sweeps["lbfgs", bio]
                print(
                    f"| whole sweep, {bio}: `lbfgs` (the default) against the `sklearn` backend, seconds | "
                    f"{ours:.2f} | {t_sweep:.2f} | {t_sweep / ours:.1f}x faster |"
                )
                continue
            print(
                f"| whole sweep, {s.layers} layers x 4 accuracies, {bio}, `{backend}`, uncached: seconds | "
                f"{t_sweep:.2f} | | |"
            )
        if backend == "sklearn":
            continue
        settings = ProbeSettings(attribute=args.attribute, bio="bio_long", backend=backend)
        sweep(s, args.model, settings)  # cache it
        t_cached, _ = timed(lambda: sweep(store.open(args.run), args.model, settings))
        print(f"| the same sweep again, from the store's cache: seconds | {t_cached:.4f} | | |")

    # The control task (a second pair of probes a layer, on random labels) and the bootstrap intervals,
    # the default since they came, against the same sweep without them, measured here in the same run.
    total = 0.0
    for model in (args.model, "untrained"):
        for bio in ("bio_long", "bio_short"):
            plain = ProbeSettings(attribute=args.attribute, bio=bio, controls=False)
            full = ProbeSettings(attribute=args.attribute, bio=bio)
            t_plain, _ = timed(lambda: sweep(s, model, plain, cache=False))

            def with_intervals():
                found = [Sweep("run", model, sweep(s, model, full, cache=False), False)]
                return summary(frame(found), found)

            t_full, _ = timed(with_intervals)
            if bio == "bio_long":
                total += t_full
            print(
                f"| whole sweep, {model}, {bio}, with the control task and 95% intervals (the default) against "
                f"without (`--no-controls`), uncached: seconds | {t_full:.2f} | {t_plain:.2f} | "
                f"{t_full / t_plain:.1f}x slower |"
            )
    print(
        f"| a table's sweeps ({args.model} and untrained, bio_long) with controls and intervals: seconds | "
        f"{total:.2f} | | |"
    )

    if not args.skip_paper:
        rng = np.random.default_rng(0)
        n, d, c = 5000, 3072, 1000
        centres = torch.tensor(rng.standard_normal((c, d)), dtype=torch.float32)
        y = torch.tensor(rng.integers(0, c, n))
        x = centres[y] + 3 * torch.randn(n, d)
        for backend in ("ridge", "lbfgs"):
            t0 = time.perf_counter()
            fit(x, y, c, backend=backend)
            t = time.perf_counter() - t0
            print(
                f"| paper scale ({n} x {d}, {c} classes), `{backend}`: seconds per probe (x3 per layer: "
                f"{3 * t:.1f} s) | {t:.2f} | | |"
            )


if __name__ == "__main__":
    main()
