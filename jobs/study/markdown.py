"""report.md: the study's numbers (report.json's, `report.collect`) as markdown beside the paper's,
with the claims and their verdicts, and links to the figures (`figures.py`)."""

from __future__ import annotations

import numpy as np

from jobs.run.spec import augmentations
from jobs.study import claims
from jobs.study.plan import ACCURACY_COLUMNS, PAPER_MODELS, REPORT_MODELS
from jobs.words import ATTRIBUTE_LABELS, ATTRIBUTES, FORMAT_LABELS, MODEL_LABELS, SET_LABELS


def _cell(stat: dict, digits: int = 1) -> str:
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if len(stat["values"]) > 1 else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def render(data: dict, figures: dict[str, str]) -> str:
    setup, n = data["setup"], len(data["runs"])
    seeds = ", ".join(str(r["seed"]) for r in data["runs"])
    acc = data["accuracy"]
    lines = [
        f"# Reproduction report: `{data['study']}` ({data['preset']} preset, {n} seed{'s' * (n > 1)})",
        "",
        f"*Understanding Fact Recall in Language Models: Why Two-Stage Training Encourages Memorization but Mixed "
        f"Training Teaches Knowledge*, reproduced by `factrecall-jobs reproduce` on {data['created']}. "
        f"{setup['people']:,} people ({setup['qa_in']:,} QA-in, {setup['qa_out']:,} QA-out); model: "
        f"{setup['model']}, {setup['layers']} layers, hidden {setup['hidden']}"
        + (f", {setup['parameters']:,} parameters" if setup.get("parameters") else "")
        + "; "
        + ", ".join(f"{ph} {v['steps']:,} steps at lr {v['settings']['lr']:g}" for ph, v in setup["phases"].items())
        + f"; seeds {seeds}. Means ± std over seeds (exact match: population std, as `factrecall-jobs show`; "
        "probes: sample std, as `factrecall-jobs probe`).",
        "",
    ]
    augmented = augmentations(setup.get("data", {}))
    if augmented:
        lines += [
            f"**Data augmented beyond the paper's:** {'; '.join(augmented)} (the paper: one entry per person, "
            "the name only in its first sentence, fixed templates and order). docs/claim5.md compares such "
            "studies with the default.",
            "",
        ]
    timing = data["timing"]
    if timing["parts"]:
        runs_s = sum(v for k, v in timing["parts"].items() if k.startswith("run "))
        lines += [
            f"**Time:** {_duration(timing['total_s'])} of wall clock in all ({_duration(runs_s)} training, "
            f"evaluating and dumping {'the run' if n == 1 else f'the {n} runs'}, "
            f"{_duration(timing['parts'].get('probes', 0))} fitting probes), "
            "summed over every invocation of the command (`timing.json`)."
            + (
                " Some phases were reused from earlier runs, so this is less than a study from scratch: "
                + "; ".join(setup["reused"])
                + "."
                if setup["reused"]
                else ""
            ),
            "",
        ]

    lines += [
        "## The paper's claims",
        "",
        *_table(
            ["", "claim", "paper", "measured here", "verdict"],
            [[f"({c['id']})", c["short"], c["paper"], c["measured"], f"**{c['verdict']}**"] for c in data["claims"]],
        ),
        "",
    ]
    for c in data["claims"]:
        lines.append(f"- ({c['id']}) *Rule:* {c['rule']}." + "".join(f" {note}." for note in c["notes"]))
    lines.append("")

    # Figure 1
    header = ["model", "Ave", *(ATTRIBUTE_LABELS[a] for a in ATTRIBUTES)]
    rows = []
    for model in ("stage", "mix"):
        rows.append([f"{MODEL_LABELS[model]}, here", *(_cell(acc[model]["qa_out"][c]) for c in ACCURACY_COLUMNS)])
        rows.append([f"{MODEL_LABELS[model]}, paper", *(f"{v:.1f}" for v in claims.PAPER_FIGURE1[model])])
    for model in ("bio", "majority"):
        if model in acc:
            rows.append([f"{MODEL_LABELS[model]}, here", *(_cell(acc[model]["qa_out"][c]) for c in ACCURACY_COLUMNS)])
    lines += [
        "## Figure 1: QA out-of-distribution exact match (%)",
        "",
        *_table(header, rows),
        "",
        f"![Figure 1]({figures['figure1']})",
        "",
    ]

    # Figure 5
    paper_names = {"untrained": "Vanilla Llama", "stage": "QA-tuned"}
    rows = []
    for model in REPORT_MODELS:
        if model in acc:
            rows.append(
                [
                    MODEL_LABELS[model],
                    *(_cell(acc[model][s]["avg"]) for s in SET_LABELS),
                    *(f"{v:.1f}" for v in claims.PAPER_FIGURE5[model]),
                    paper_names.get(model, ""),
                ]
            )
    lines += [
        "## Figure 5: BIO, QA in-distribution and QA out-of-distribution exact match (%)",
        "",
        *_table(
            [
                "model",
                *(f"{label}, here" for label in SET_LABELS.values()),
                *(f"{label}, paper" for label in SET_LABELS.values()),
                "paper's name",
            ],
            rows,
        ),
        "",
        (
            "The paper's untrained model is a pretrained Llama-3.2-3B; here it is the built-in model's random "
            "initialisation."
            if setup["model"] == "built-in Llama"
            else ""
        ),
        "",
        f"![Figure 5]({figures['figure5']})",
        "",
    ]

    # Figures 3 and 4
    top = claims.top_layers(data["layers"])
    top_text = f"layer {top[0]}" if len(top) == 1 else f"layers {top[0]}–{top[-1]}"
    for fmt, fig_name, paper_text in (
        (
            "bio_long",
            "Figure 3",
            (
                "Stage's Δrep significantly larger than Mix's; both Δmech relatively small, "
                "Stage's ≈ 20 at layer 24 of 28."
            ),
        ),
        ("bio_short", "Figure 4", "both models' Δrep much smaller (< 10) and Δmech nearly zero."),
    ):
        rows = []
        for a in ATTRIBUTES:
            cells = [a]
            for model in PAPER_MODELS:
                probe_rows = data["probes"][fmt][a][model]
                for c in ("acc_qa_wqa", "acc_bio_wqa", "acc_bio_wbio", "delta_rep", "delta_mech", "cosine"):
                    mean = np.mean([probe_rows[layer][c]["mean"] for layer in top])
                    cells.append(f"{mean:.2f}" if c == "cosine" else f"{mean:.1f}")
            base = data["probes"][fmt][a].get("untrained")
            if base is not None:  # the baseline: what a probe reads before any fact was learned
                cells += [
                    f"{np.mean([base[layer][c]['mean'] for layer in top]):.1f}" for c in ("acc_qa_wqa", "acc_bio_wbio")
                ]
            rows.append(cells)
        header = [
            "attribute",
            *(
                f"{MODEL_LABELS[m]} {label}"
                for m in PAPER_MODELS
                for label in ("Acc(hQA·WQA)", "Acc(hBIO·WQA)", "Acc(hBIO·WBIO)", "Δrep", "Δmech", "cos")
            ),
        ]
        if "untrained" in data["probes"][fmt][ATTRIBUTES[0]]:
            header += ["Untrained Acc(hQA·WQA)", "Untrained Acc(hBIO·WBIO)"]
        cis = data.get("probe_intervals", {}).get(fmt, {}).get("job")
        n_classes = {a: data["probes"][fmt][a]["stage"][0]["n_classes"] for a in ATTRIBUTES}
        lines += [
            f"## {fig_name}: probes with BIO = {FORMAT_LABELS[fmt]}, every attribute",
            "",
            (
                f"Linear probes per layer on resid_mid (residual stream + attention output), trained on the QA-in "
                f"people and scored on the QA-out people; {top_text} (the top quarter), mean over seeds. Classes: the "
                f"attribute's first tokens that occur ({', '.join(f'{a} {k}' for a, k in n_classes.items())}). "
                f"**Paper** (job, Llama-3.2-3B): {paper_text}"
            ),
            "",
            *_table(header, rows),
            "",
            *([_intervals_line(cis, top_text), ""] if cis else []),
            f"![{fig_name}, job]({figures[f'probe-job-{fmt}']})",
            "",
            "Every attribute: " + ", ".join(f"[{a}]({figures[f'probe-{a}-{fmt}']})" for a in ATTRIBUTES) + ".",
            "",
        ]
    lines += [f"![Δrep and Δmech at the top, every attribute]({figures['deltas']})", ""]

    # Interventions
    lines += _interventions(data, top_text)

    # Over training
    traj = data["trajectory"]
    if traj:
        lines += [
            "## Beyond the paper: the representation over training",
            "",
            (
                f"{setup['snapshots']} checkpoints along every phase (`train.snapshots`), each evaluated and its "
                "activations dumped (RUN/trajectory.zarr) and probed with BIO_long; the top-layer Δrep, Δmech and "
                "cosine of hBIO and hQA, averaged over the six attributes, beside QA out-of-distribution exact match. "
                "Progress 0 → 1 is the phase that trains on QA (Stage's QA phase, Mix's only phase); Stage's BIO "
                "phase is -1 → 0."
            ),
            "",
        ]
        rows = []
        for strategy in ("stage", "mix"):
            for p in traj[strategy]:
                rows.append(
                    [
                        MODEL_LABELS[strategy],
                        p["models"][0].split("@")[0] if "@" not in p["models"][0] else p["models"][0],
                        f"{p['x']:+.2f}",
                        *(_cell(p[k]) for k in SET_LABELS),
                        _cell(p["delta_rep"]),
                        _cell(p["delta_mech"]),
                        _cell(p["cosine"], digits=2),
                        _cell(p["cka"], digits=2),
                    ]
                )
        lines += _table(
            ["model", "checkpoint (seed 0's)", "progress", "BIO", "QA in", "QA out", "Δrep", "Δmech", "cos", "CKA"],
            rows,
        )
        lines += ["", *trajectory_findings(traj), "", f"![Over training]({figures['trajectory']})", ""]

    lines += where_section(data.get("where"))

    lines += [
        "## Where every number comes from",
        "",
        "`report.json` beside this file holds every number above with its per-seed values. Each seed is one run "
        f"folder in the workspace (`{data['workspace']}`): "
        + ", ".join(f"seed {r['seed']} `{r['path']}`" for r in data["runs"])
        + ". In a run folder, exact match "
        "is in `metrics.json` (`MODEL.SET.avg` or `.ATTRIBUTE`; a snapshot's under `snapshots`), and each probe "
        "sweep is cached in `activations.zarr/probes/` or `trajectory.zarr/probes/`: "
        "`factrecall-jobs probe RUN --attribute job --bio long` prints one from its cache, "
        "`factrecall-jobs probe RUN/trajectory.zarr --models stage@163 --attribute job` a snapshot's.",
    ]
    return "\n".join(lines) + "\n"


def _intervals_line(cis: dict, top_text: str) -> str:
    """job's top-layer 95% bootstrap intervals (over people and seeds), and each model's selectivity."""

    def ci(m: str, c: str) -> str:
        lo, hi = cis[m][c]
        return f"[{lo:.1f}, {hi:.1f}]"

    parts = [
        f"{MODEL_LABELS[m]} Δrep {ci(m, 'delta_rep')}, Δmech {ci(m, 'delta_mech')}, Acc(hQA·WQA) "
        f"{ci(m, 'acc_qa_wqa')}, selectivity of Acc(hBIO·WBIO) over its control task {ci(m, 'sel_bio_wbio')}"
        for m in cis
    ]
    return (
        f"95% bootstrap intervals for job, {top_text} (test people resampled, and seeds): "
        + "; ".join(parts)
        + ". A control task (each person's job re-drawn at random, fitted and scored alike) reads about chance: "
        "selectivity is accuracy minus it."
    )


def _interventions(data: dict, top_text: str) -> list[str]:
    iv = data.get("interventions")
    if not iv:
        return []
    from store.interventions import LABELS

    shown = (
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
    rows = []
    for model in PAPER_MODELS:
        for row in iv["layers"][model]:
            rows.append([MODEL_LABELS[model], str(row["layer"]), *(f"{row[c]['mean']:.1f}" for c in shown)])
    top = iv["top"]
    gains = "; ".join(
        f"{MODEL_LABELS[m]}: hBIO_long→QA {top[m]['gain_bio_long_qa']['mean']:+.1f} "
        f"[{top[m]['gain_bio_long_qa']['ci'][0]:.1f}, {top[m]['gain_bio_long_qa']['ci'][1]:.1f}], "
        f"hBIO_short→QA {top[m]['gain_bio_short_qa']['mean']:+.1f} "
        f"[{top[m]['gain_bio_short_qa']['ci'][0]:.1f}, {top[m]['gain_bio_short_qa']['ci'][1]:.1f}], "
        f"LEACE erasure takes {top[m]['drop_erase_qa']['mean']:.1f} of QA recall, as many random directions "
        f"{top[m]['drop_erase_random_qa']['mean']:.1f}"
        for m in PAPER_MODELS
    )
    out = [
        "## Beyond the paper: interventions (does the model use what the probes read?)",
        "",
        (
            f"`factrecall-jobs patch`: for each of the {iv['n_people']} {iv['split']} people, resid_mid at one layer "
            f"and the last prompt token of the {iv['attribute']} prompt is replaced, the pass goes on, and the answer "
            "is decoded greedily and scored by exact match (%, mean over seeds). Columns: the unpatched QA prompt; the "
            "same person's hBIO_long or hBIO_short put into the QA pass; the person's own hQA (a control: it must "
            "change nothing); another person's hBIO_long (the share answering with *that* person's value); a random "
            "vector of hBIO_long's norm; the unpatched BIO_long prompt; hQA put into the BIO_long pass; LEACE erasure "
            f"of the attribute at the layer (fitted on the QA-in people; it removes up to {iv['erase_rank']} "
            "directions) and, as its control, as many random directions removed."
        ),
        "",
        *_table(["model", "layer", *(LABELS[c] for c in shown)], rows),
        "",
        f"Differences from the unpatched prompt, {top_text}, with 95% bootstrap intervals (people and seeds): {gains}.",
        "",
    ]
    if data.get("causal"):
        out += _table(
            ["", "claim (causal twin)", "measured here", "verdict"],
            [[f"({c['id']}′)", c["short"], c["measured"], f"**{c['verdict']}**"] for c in data["causal"]],
        )
        out += [""]
        for c in data["causal"]:
            out += [f"- ({c['id']}′) *Rule:* {c['rule']}." + "".join(f" {n}." for n in c["notes"])]
        out += [""]
    return out + [f"![Interventions]({'patch.png'})", ""]


def trajectory_findings(traj: dict) -> list[str]:
    """What the checkpoints say, computed: where each quantity makes half its change, and whether the
    alignment gap between Mix and Stage opens before the accuracy gap."""
    o = traj["onsets"]

    def at(x: float | None) -> str:
        return "never (no change)" if x is None else f"{x:.2f}"

    out = []
    for s in ("stage", "mix"):
        out.append(
            f"- {MODEL_LABELS[s]}: QA out makes half its change at progress {at(o[s]['qa_out'])}, the cosine at "
            f"{at(o[s]['cosine'])}, Δrep at {at(o[s]['delta_rep'])}."
        )
    gap = o.get("gap")
    if gap:
        values = o["gap_values"]
        stage0 = traj["stage"]
        out.append(
            "- Mix − Stage at matching progress ("
            + ", ".join(f"{x:.2f}" for x in o["gap_x"])
            + "): cosine "
            + ", ".join(f"{v:+.2f}" for v in values["cosine"])
            + "; QA out "
            + ", ".join(f"{v:+.1f}" for v in values["qa_out"])
            + "."
        )
        out.append(
            f"- The cosine gap reaches half its final size at progress {at(gap['cosine'])}, the QA-out gap at "
            f"{at(gap['qa_out'])} (linear between checkpoints)."
        )
        if values["cosine"][0] >= values["cosine"][-1] / 2 > 0:
            out.append(
                f"- The alignment gap is there before either model has seen a QA pair: Stage's BIO phase took "
                f"its cosine from {stage0[0]['cosine']['mean']:.2f} (untrained) to "
                f"{next(p for p in stage0 if p['x'] == 0.0)['cosine']['mean']:.2f}."
            )
        if gap["cosine"] is not None and gap["qa_out"] is not None:
            if gap["cosine"] < gap["qa_out"] - 1e-9:
                verdict = "Mix's and Stage's representations part before their QA-out accuracies do"
            elif gap["cosine"] > gap["qa_out"] + 1e-9:
                verdict = "the accuracy gap opens first and the alignment gap follows it"
            else:
                verdict = "the two gaps open together at this resolution"
            out.append(f"- So, {verdict}.")
    return out


def where_section(where: dict | None) -> list[str]:
    """ "Where the fact is" (jobs.study.where): per layer, Acc(hQA·WQA) and Acc(hBIO·WBIO) at each site,
    Stage beside Mix; then the subject position's causal test."""
    if not where:
        return []
    seeds = where["seeds"]
    over = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    lines = [
        "## Beyond the paper: where the fact is",
        "",
        (
            f"Probes for {where['attribute']} (BIO_long; QA-in people train, QA-out people test; {over}) at three "
            "hooks of every block, at the subject's last token (`subject_last`: the name in QA, the name or pronoun "
            "opening BIO_long's last sentence) and at the last token (`last`, the paper's). The paper's account "
            "reads the fact at the last token; Geva et al. (2023) find it enriched at the subject and extracted "
            "at the end. Sites: docs/sites.md; the vectors are RUN/sites.zarr."
        ),
        "",
    ]
    sites = where["sites"]
    header = ["layer", "site", *(f"{MODEL_LABELS[m]} {k}" for m in ("stage", "mix") for k in ("QA·WQA", "BIO·WBIO"))]
    rows = []
    layers = len(where["probes"]["stage"][sites[0]])
    for layer in range(layers):
        for site in sites:
            cells = []
            for model in ("stage", "mix"):
                row = where["probes"][model][site][layer]
                cells += [_cell(row["acc_qa_wqa"]), _cell(row["acc_bio_wbio"])]
            rows.append([str(layer), f"`{site}`", *cells])
    lines += _table(header, rows)
    lines += [
        "",
        (
            f"The causal test: `{where['patch_site']}`'s vector from the BIO_long pass put into the QA pass at the "
            f"same site, one layer at a time, for {where['patch_people']} {where['patch_split'].replace('_', '-')} "
            "people; QA exact match (%) for the attribute (unpatched: `qa`; own QA vector put back: identity; a "
            "random vector of the same norm: random; another person's BIO_long vector: the share answering theirs)."
        ),
        "",
    ]
    kinds = ("QA", "hBIO→QA", "identity", "random", "donor's")
    header = ["layer", *(f"{MODEL_LABELS[m]} {k}" for m in ("stage", "mix") for k in kinds)]
    rows = []
    for i, layer_row in enumerate(where["patch"]["stage"]):
        cells = []
        for model in ("stage", "mix"):
            r = where["patch"][model][i]
            cells += [_cell(r[c]) for c in ("qa", "bio_long_qa", "identity_qa", "random_qa", "donor_rate")]
        rows.append([str(layer_row["layer"]), *cells])
    lines += _table(header, rows)
    lines.append("")
    return lines
