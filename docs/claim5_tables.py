"""Every table of docs/claim5.md, from the studies' report.json files.

    python docs/claim5_tables.py [--figure docs/claim5.png] docs/reproduce/cpu-default docs/reproduce/cpu-fullname ...

Each argument is a study folder (`WORKSPACE/reproduce/NAME`, or its copy under docs/reproduce/); the
first is the default study the others are read against. Numbers are the reports' own: exact match
and probe accuracies are means over seeds (± std where there are several), Δrep and Δmech carry the
report's 95% bootstrap interval over people and seeds, and the verdicts are the ones `reproduce`
computed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from jobs.run.spec import augmentations
from jobs.study.claims import PAPER_FIGURE5, top_layers
from jobs.study.markdown import _cell, _table
from jobs.words import ATTRIBUTES

PROBE_COLUMNS = (
    ("acc_bio_wbio", "Acc(hBIO·WBIO)"),
    ("acc_qa_wqa", "Acc(hQA·WQA)"),
    ("acc_bio_wqa", "Acc(hBIO·WQA)"),
    ("acc_qa_wbio", "Acc(hQA·WBIO)"),
)
MODELS = (("stage", "Stage"), ("mix", "Mix"))


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(_table(header, rows))


def label(report: dict) -> str:
    plain = not augmentations(report["setup"].get("data", {}))
    return f"`{report['study']}`" + (" (default)" if plain else "")


def top_mean(report: dict, fmt: str, attribute: str, model: str, column: str) -> float:
    rows = report["probes"][fmt][attribute][model]
    return float(np.mean([rows[layer][column]["mean"] for layer in top_layers(report["layers"])]))


def with_interval(report: dict, fmt: str, attribute: str, model: str, column: str) -> str:
    text = f"{top_mean(report, fmt, attribute, model, column):.1f}"
    ci = report.get("probe_intervals", {}).get(fmt, {}).get(attribute, {}).get(model, {}).get(column)
    return text + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def studies(reports: list[dict]) -> str:
    rows = []
    for r in reports:
        setup = r["setup"]
        data = ", ".join(augmentations(setup.get("data", {}))) or "the paper's: one entry, name in its first sentence"
        steps = ", ".join(f"{phase} {v['steps']:,}" for phase, v in setup["phases"].items())
        rows.append([label(r), data, ", ".join(str(x["seed"]) for x in r["runs"]), steps])
    return table(["study", "BIO data", "seeds", "training steps"], rows)


def accuracy(reports: list[dict]) -> str:
    rows = []
    for r in reports:
        acc = r["accuracy"]
        gap = np.mean(acc["mix"]["qa_out"]["avg"]["values"]) - np.mean(acc["stage"]["qa_out"]["avg"]["values"])
        rows.append(
            [label(r), *(_cell(acc[m][s]["avg"]) for m, _ in MODELS for s in ("bio", "qa_in", "qa_out")), f"{gap:+.1f}"]
        )
    paper = [f"{v:.1f}" for m, _ in MODELS for v in PAPER_FIGURE5[m]]
    rows.append(["paper (Llama-3.2-3B)", *paper, f"{PAPER_FIGURE5['mix'][2] - PAPER_FIGURE5['stage'][2]:+.1f}"])
    return table(
        ["study", *(f"{name} {s}" for _, name in MODELS for s in ("BIO", "QA in", "QA out")), "Mix − Stage, QA out"],
        rows,
    )


def probes(reports: list[dict], fmt: str, attribute: str = "job") -> str:
    rows = []
    for r in reports:
        for model, name in MODELS:
            rows.append(
                [
                    label(r),
                    name,
                    *(f"{top_mean(r, fmt, attribute, model, c):.1f}" for c, _ in PROBE_COLUMNS),
                    with_interval(r, fmt, attribute, model, "delta_rep"),
                    with_interval(r, fmt, attribute, model, "delta_mech"),
                ]
            )
    return table(["study", "model", *(h for _, h in PROBE_COLUMNS), "Δrep [95%]", "Δmech [95%]"], rows)


def readable(reports: list[dict]) -> str:
    """Acc(hBIO_short·WBIO) at the top layer, every attribute: can a probe read the fact off the prompt?"""
    rows = []
    for r in reports:
        for model, name in MODELS:
            values = [top_mean(r, "bio_short", a, model, "acc_bio_wbio") for a in ATTRIBUTES]
            rows.append([label(r), name, *(f"{v:.1f}" for v in values), f"{np.mean(values[1:]):.1f}"])
    return table(["study", "model", *ATTRIBUTES, "mean without birth_date"], rows)


def patches(reports: list[dict]) -> str:
    """The causal twins' numbers: each person's own hBIO_long or hBIO_short put into the QA pass (job,
    top layer, QA-out people), the gain over unpatched QA."""
    rows = []
    for r in reports:
        top = r.get("interventions", {}).get("top")
        if not top:
            continue
        for model, name in MODELS:
            t = top[model]
            rows.append(
                [
                    label(r),
                    name,
                    f"{t['qa']['mean']:.1f}",
                    *(
                        f"{t[g]['mean']:+.1f} [{t[g]['ci'][0]:+.1f}, {t[g]['ci'][1]:+.1f}]"
                        for g in ("gain_bio_long_qa", "gain_bio_short_qa")
                    ),
                ]
            )
    return table(["study", "model", "QA", "hBIO_long→QA gain [95%]", "hBIO_short→QA gain [95%]"], rows)


def verdicts(reports: list[dict]) -> str:
    rows = []
    for r in reports:
        judged = {c["id"]: c["verdict"] for c in r["claims"]}
        causal = {c["id"]: c["verdict"] for c in r.get("causal", [])}
        rows.append([label(r), *(judged.get(i, "–") for i in range(1, 6)), causal.get(4, "–"), causal.get(5, "–")])
    rows.append(["paper", *(["holds"] * 5), "–", "–"])
    return table(["study", "(1)", "(2)", "(3)", "(4)", "(5)", "(4′) patch", "(5′) patch"], rows)


def measured(reports: list[dict], claim: int) -> str:
    return "\n".join(f"- {label(r)}: {next(c['measured'] for c in r['claims'] if c['id'] == claim)}" for r in reports)


def figure(reports: list[dict], out: Path) -> None:
    """Left: can a probe read BIO_short (Acc(hBIO_short·WBIO), mean over the attributes but birth_date)?
    Right: claim 5's numbers, job's Δrep and Δmech with BIO_short and their 95% intervals, beside the
    paper's thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jobs.study.claims import AT_FLOOR, PAPER_SHORT_DELTA_REP, SMALL_MECH

    names = [r["study"] for r in reports]
    x = np.arange(len(reports))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for k, (model, name) in enumerate(MODELS):
        read = [np.mean([top_mean(r, "bio_short", a, model, "acc_bio_wbio") for a in ATTRIBUTES[1:]]) for r in reports]
        left.bar(x + (k - 0.5) * 0.38, read, 0.38, label=name)
    left.axhline(AT_FLOOR, color="grey", ls=":", lw=1, label=f"floor ({AT_FLOOR:g}%)")
    left.set(
        xticks=x,
        ylabel="Acc(hBIO_short·WBIO), %",
        ylim=(0, 100),
        title="Can a probe read BIO_short? (top layer, 5 attributes)",
    )
    left.set_xticklabels(names, rotation=15)
    left.legend(fontsize=8)
    for k, (column, shown, limit) in enumerate(
        (("delta_rep", "Δrep", PAPER_SHORT_DELTA_REP), ("delta_mech", "Δmech", SMALL_MECH))
    ):
        for j, (model, name) in enumerate(MODELS):
            at = x + (2 * k + j - 1.5) * 0.2
            mean = [top_mean(r, "bio_short", "job", model, column) for r in reports]
            cis = [
                r.get("probe_intervals", {}).get("bio_short", {}).get("job", {}).get(model, {}).get(column)
                for r in reports
            ]
            err = np.array([[m - c[0], c[1] - m] if c else [np.nan, np.nan] for m, c in zip(mean, cis)]).T
            right.bar(
                at,
                mean,
                0.2,
                yerr=err,
                capsize=2,
                label=f"{name} {shown}",
                hatch="//" if k else None,
                color=f"C{j}",
                alpha=0.9 if k == 0 else 0.5,
            )
        right.axhline(
            limit,
            color="k" if k == 0 else "grey",
            ls="--" if k == 0 else ":",
            lw=1,
            label=f"paper: {shown} < {limit:g}" if k == 0 else f"{shown} near 0: < {limit:g}",
        )
    right.set(xticks=x, ylabel="points", title="Claim 5, job, BIO_short, top layer (95% intervals)")
    right.set_xticklabels(names, rotation=15)
    right.legend(fontsize=7, ncol=2)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(folders: list[str], out: Path | None = None) -> int:
    reports = [json.loads((Path(f) / "report.json").read_text()) for f in folders]
    if out is not None:
        figure(reports, out)
    sections = {
        "The studies": studies(reports),
        "Exact match (Figures 1 and 5, averaged over attributes)": accuracy(reports),
        "BIO_short probes, job, top layer (Figure 4)": probes(reports, "bio_short"),
        "Can a probe read BIO_short? Acc(hBIO_short·WBIO), top layer, every attribute": readable(reports),
        "BIO_long probes, job, top layer (Figure 3)": probes(reports, "bio_long"),
        "Patching the BIO prompts' vectors into the QA pass, job, top layer": patches(reports),
        "The verdicts": verdicts(reports),
        "Claim 5 as measured": measured(reports, 5),
        "Claim 4 as measured": measured(reports, 4),
        "Claim 3 as measured": measured(reports, 3),
    }
    for title, text in sections.items():
        print(f"### {title}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--figure"]:
        out, args = Path(args[1]), args[2:]
    if not args:
        sys.exit(
            "give the study folders, the default first: python docs/claim5_tables.py [--figure PNG] STUDY [STUDY ...]"
        )
    sys.exit(main(args, out))
