"""How many training people does a probe need? The probe of a sweep (store.probes.fit, as
`factrecall-jobs probe` fits it) trained on the first K QA-in people (in a fixed random order), scored
on every QA-out person, for several K: a learning curve per format at one layer.

    python benchmarks/probe_people.py RUN [RUN ...] --model mix --attribute job --layer -1 --sizes 20 40 75 150 400 800

Prints one Markdown table: K, then Acc(hBIO·WBIO) and Acc(hQA·WQA) (mean over RUNs and 5 orders).
A size larger than a run's QA-in people is skipped for that run.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import store
from store.probes import ProbeSettings, _classes, accuracy, fit  # a sweep's own classes (classes=observed)


def curve(path: str, model: str, attribute: str, layer: int, sizes: list[int], orders: int) -> dict[int, list]:
    s = store.open(path)
    classes, n_classes = _classes(s, ProbeSettings(attribute=attribute))
    train, test = np.flatnonzero(s.split == "qa_in"), np.flatnonzero(s.split == "qa_out")
    acts = {
        fmt: torch.as_tensor(s.acts(fmt, layer % s.layers, attribute, model=model), dtype=torch.float32)
        for fmt in ("bio_long", "qa")
    }
    y = torch.as_tensor(classes, dtype=torch.long)
    out: dict[int, list] = {}
    for k in sizes:
        if k > len(train):
            continue
        for seed in range(orders):
            rows = np.random.default_rng(seed).permutation(train)[:k]
            out.setdefault(k, []).append(
                [
                    accuracy(fit(acts[fmt][rows], y[rows], n_classes), acts[fmt][test], y[test])
                    for fmt in ("bio_long", "qa")
                ]
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--model", default="mix")
    ap.add_argument("--attribute", default="job")
    ap.add_argument("--layer", type=int, default=-1, help="layer (negative: from the top; default the last)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 75, 150, 400, 800])
    ap.add_argument("--orders", type=int, default=5, help="random orders of the QA-in people per size")
    args = ap.parse_args()
    rows: dict[int, list] = {}
    for run in args.runs:
        for k, accs in curve(run, args.model, args.attribute, args.layer, args.sizes, args.orders).items():
            rows.setdefault(k, []).extend(accs)
    print(
        f"{args.model}, {args.attribute}, layer {args.layer}: probes trained on K QA-in people, "
        "scored on every QA-out person\n"
    )
    print("| K | Acc(hBIO·WBIO) | Acc(hQA·WQA) | fits |")
    print("|---|---|---|---|")
    for k in sorted(rows):
        a = np.array(rows[k])
        print(
            f"| {k} | {a[:, 0].mean():.1f} ± {a[:, 0].std():.1f} | "
            f"{a[:, 1].mean():.1f} ± {a[:, 1].std():.1f} | {len(a)} |"
        )


if __name__ == "__main__":
    main()
