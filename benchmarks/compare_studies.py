"""Two finished studies side by side (e.g. the cpu preset in fp32 and in bf16): accuracy per model and
attribute, the probe table at the top layer, the five verdicts, and the wall time of each part, each
difference marked when it is beyond the seeds' spread (the larger of the two standard deviations,
and at least 1 point).

    python benchmarks/compare_studies.py docs/reproduce/cpu/report.json WORKSPACE/reproduce/cpu-bf16/report.json

Reads only the two report.json files; prints markdown to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = ("bio", "qa_in", "qa_out")
MODELS = ("bio", "stage", "mix")
PROBE_COLUMNS = ("acc_qa_wqa", "acc_bio_wbio", "delta_rep", "delta_mech")


def _cell(a: dict, b: dict) -> tuple[str, bool]:
    spread = max(a["std"], b["std"], 1.0)
    beyond = abs(b["mean"] - a["mean"]) > spread
    text = f"{a['mean']:.1f} ± {a['std']:.1f} | {b['mean']:.1f} ± {b['std']:.1f} | {b['mean'] - a['mean']:+.1f}"
    return text + (" **beyond**" if beyond else ""), beyond


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    args = ap.parse_args()
    a, b = (json.loads(p.read_text()) for p in (args.first, args.second))
    names = (a["study"], b["study"])
    beyond = 0
    print(f"Accuracy, mean ± std over seeds ({len(a['runs'])} and {len(b['runs'])}), exact match in %:\n")
    print(f"| model | set | attribute | {names[0]} | {names[1]} | difference |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        for s in SETS:
            attributes = [k for k in a["accuracy"][model][s] if k != "avg"] if s == "qa_out" else []
            for attribute in ["avg", *attributes]:
                text, far = _cell(a["accuracy"][model][s][attribute], b["accuracy"][model][s][attribute])
                beyond += far
                print(f"| {model} | {s} | {attribute} | {text} |")
    print("\nProbes, BIO_long, the top layer, mean over attributes of each seed-mean:\n")
    print(f"| model | measure | {names[0]} | {names[1]} | difference |")
    print("|---|---|---|---|---|")
    for model in ("stage", "mix"):
        for column in PROBE_COLUMNS:
            means = []
            for report in (a, b):
                tops = [rows[model][-1][column]["mean"] for rows in report["probes"]["bio_long"].values()]
                means.append(sum(tops) / len(tops))
            print(f"| {model} | {column} | {means[0]:.1f} | {means[1]:.1f} | {means[1] - means[0]:+.1f} |")
    print(f"\nVerdicts:\n\n| claim | {names[0]} | {names[1]} |")
    print("|---|---|---|")
    for ca, cb in zip(a["claims"], b["claims"]):
        print(f"| ({ca['id']}) {ca['short']} | {ca['verdict']} | {cb['verdict']} |")
    print(f"\nWall time, seconds:\n\n| part | {names[0]} | {names[1]} | ratio |")
    print("|---|---|---|---|")
    parts_a, parts_b = a["timing"]["parts"], b["timing"]["parts"]
    for (ka, va), (kb, vb) in zip(parts_a.items(), parts_b.items()):
        print(f"| {ka} / {kb} | {va:,.0f} | {vb:,.0f} | {va / vb:.2f}x |")
    print(
        f"| total | {a['timing']['total_s']:,.0f} | {b['timing']['total_s']:,.0f} | "
        f"{a['timing']['total_s'] / b['timing']['total_s']:.2f}x |"
    )
    print(f"\n{beyond} accuracy cells differ by more than the seeds' spread.")


if __name__ == "__main__":
    main()
