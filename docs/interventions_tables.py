"""The numbers of docs/interventions.md, from three finished cpu-preset runs (`factrecall-jobs run
--seed S` for S in 0 1 2): every attribute's interventions (computed with `factrecall-jobs patch`'s
defaults, or read from the stores' caches), job's probes with their control task and intervals, and
how well one seed's bootstrap interval covers the other seeds' values. Prints markdown.

    python docs/interventions_tables.py workspace/runs/cpu-stage+mix-s{0,1,2} > /tmp/tables.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import store
from jobs.run.patch import patch
from jobs.words import ATTRIBUTES
from store.interventions import DIFFERENCES, LABELS, PatchSettings, frame, intervals, summary
from store.probe_tables import frame as probe_frame
from store.probe_tables import intervals as probe_intervals
from store.probes import ProbeSettings, Sweep, sweeps

SHOWN = (
    "qa",
    "bio_long_qa",
    "bio_short_qa",
    "identity_qa",
    "donor_rate",
    "random_qa",
    "bio",
    "qa_bio_long",
    "erase_qa",
    "erase_random_qa",
    "erase_bio",
)


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]
    )


def main(paths: list[Path]) -> None:
    stores = [store.open(p) for p in paths]
    top = [stores[0].layers - 1]
    seconds = {}
    print("## Every attribute, top layer (mean over seeds [95% bootstrap interval over people and seeds])\n")
    rows_all = []
    for attribute in ATTRIBUTES:
        t0 = time.perf_counter()
        found = [
            r
            for p, s in zip(paths, stores)
            for r, _ in patch(p, s, ["stage", "mix"], PatchSettings(attribute=attribute))
        ]
        seconds[attribute] = time.perf_counter() - t0
        for model in ("stage", "mix"):
            mine = [r for r in found if r["model"] == model]
            ci = intervals(found, model, top)
            mean = {c: np.mean([r["rows"][-1][c] for r in mine]) for c in SHOWN}
            for name, (a, b) in DIFFERENCES.items():
                mean[name] = mean[a] - mean[b]
            rows_all.append(
                [
                    attribute,
                    model,
                    *(f"{mean[c]:.1f}" for c in SHOWN),
                    f"{mean['gain_bio_long_qa']:+.1f} "
                    f"[{ci['gain_bio_long_qa'][0]:.1f}, {ci['gain_bio_long_qa'][1]:.1f}]",
                    f"{mean['gain_bio_short_qa']:+.1f} "
                    f"[{ci['gain_bio_short_qa'][0]:.1f}, {ci['gain_bio_short_qa'][1]:.1f}]",
                ]
            )
        if attribute == "job":
            df = frame([(p.name, r) for p, r in zip([p for p in paths for _ in (0, 1)], found)])
            agg = summary(df, found)
            print("### job, every layer\n")
            print(
                table(
                    ["model", "layer", *(LABELS[c] for c in SHOWN)],
                    [
                        [
                            r["model"],
                            str(int(r["layer"])),
                            *(f"{r[c]:.1f} [{r[c + '_lo']:.1f}, {r[c + '_hi']:.1f}]" for c in SHOWN),
                        ]
                        for _, r in agg.iterrows()
                    ],
                )
            )
            print()
    print("### Every attribute, top layer\n")
    print(
        table(["attribute", "model", *(LABELS[c] for c in SHOWN), "gain hBIO_long→QA", "gain hBIO_short→QA"], rows_all)
    )
    print()
    print(
        "Seconds per attribute (three runs, Stage and Mix; 0 where cached): "
        + ", ".join(f"{a} {s:.1f}" for a, s in seconds.items())
        + "\n"
    )

    print("## Probes with controls and intervals (job, top layer)\n")
    rows = []
    for fmt in ("bio_long", "bio_short"):
        found = list(sweeps(stores, ["stage", "mix", "untrained"], ProbeSettings(attribute="job", bio=fmt)))
        df = probe_frame(found)
        for model in ("stage", "mix", "untrained"):
            ci = probe_intervals(found, model, top)
            d = df[(df["model"] == model) & (df["layer"] == top[0])]
            cells = [fmt, model]
            for c in (
                "acc_qa_wqa",
                "acc_bio_wqa",
                "acc_bio_wbio",
                "ctl_qa_wqa",
                "ctl_bio_wbio",
                "sel_qa_wqa",
                "sel_bio_wbio",
                "delta_rep",
                "delta_mech",
            ):
                cells.append(f"{d[c].mean():.1f} [{ci[c][0]:.1f}, {ci[c][1]:.1f}]")
            rows.append(cells)
        if fmt == "bio_long":
            coverage(found, top)
    print(
        table(
            [
                "BIO",
                "model",
                "Acc(hQA·WQA)",
                "Acc(hBIO·WQA)",
                "Acc(hBIO·WBIO)",
                "Control(hQA·WQA)",
                "Control(hBIO·WBIO)",
                "Sel(hQA·WQA)",
                "Sel(hBIO·WBIO)",
                "Δrep",
                "Δmech",
            ],
            rows,
        )
    )
    print()


def coverage(found: list[Sweep], top: list[int]) -> None:
    """How often one seed's person-level interval holds another seed's value (job, BIO_long, every
    layer, model and interval column): the seed-to-seed spread against what one run's interval says."""
    held, total, worst = 0, 0, []
    for model in ("stage", "mix", "untrained"):
        mine = [f for f in found if f.model == model]
        for layer in range(len(mine[0].rows)):
            for i, one in enumerate(mine):
                ci = probe_intervals([one], model, [layer])
                for j, other in enumerate(mine):
                    if i == j:
                        continue
                    row = other.rows[layer]
                    for c in ("acc_qa_wqa", "acc_bio_wqa", "acc_qa_wbio", "acc_bio_wbio", "delta_rep", "delta_mech"):
                        ok = ci[c][0] - 1e-9 <= row[c] <= ci[c][1] + 1e-9
                        held += ok
                        total += 1
                        if not ok:
                            worst.append(
                                f"{model} L{layer} {c}: seed {j}'s {row[c]:.1f} outside seed {i}'s "
                                f"[{ci[c][0]:.1f}, {ci[c][1]:.1f}]"
                            )
    print(
        f"Seed-to-seed coverage (job, BIO_long): one seed's 95% interval holds another seed's value in {held} of "
        f"{total} comparisons ({100 * held / total:.0f}%; two independent draws' difference has twice one draw's "
        "variance, so about 83% is what an honest interval gives when seeds differ only in their people).\n"
    )
    for line in worst[:8]:
        print(f"- {line}")
    print()


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
