"""`factrecall-jobs reproduce --dry-run`: validate a study completely and print what it would cost,
writing nothing.

Validation is what the run itself does before training: the spec, the checkpoint folder, the
device, the data (seed 0's people, made in memory), the tokenizer's answer boundary (on a sample of
the prompts that holds every template and every answer value, `boundary_sample`: the run checks all
of them again before it trains), and the packed row length. The plan counts, per phase, the optimizer
steps and the tokens they train on (from the real data plan, `jobs.run.train.plan_batches`), and
estimates (the cost model is `jobs.study.costs`):

- compute: 6 x N x tokens for training and 2 x N x tokens for evaluation and the dump, N the
  parameters a token passes through (the input embedding is a lookup, the output head a matmul);
- time: on a CPU, that compute at this CPU's matrix-product rate at the model's shapes, in the
  precision the run computes in (`jobs.study.rate`: a GEMM probe of a second or so, the best rate
  ever measured on this machine kept), times the share of it that training, evaluation and the dump
  reach (MFU, measured by benchmarks/bench_gemm.py and the cpu and smol studies, by hidden size:
  `jobs.study.costs.MFU`); plus the probe sweeps. On a GPU, at --tflops (default 100 TFLOP/s, about a
  third of an A100's bf16 peak);
- memory: fp32 weights, gradients and AdamW's two moments (16 bytes a parameter: `jobs.run.model.autocast`
  keeps fp32 masters under bf16 compute) plus activations (Korthikanti et al. 2022: about 34 bytes x
  hidden a token a layer in 16-bit, twice that in fp32, and 8 bytes a token per vocabulary entry for
  the logits and their gradient); with train.gradient_checkpointing, only each block's input is kept
  (2 or 4 bytes x hidden a token a layer) plus one block's activations while it is recomputed, for 8
  rather than 6 x N x tokens of compute. Against --gpu-memory (default: the GPU's own, when there is
  one) the plan says whether training fits, and if not, what would make it fit;
- disk: checkpoints (fp32), snapshots, and the two activation stores (float16).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoConfig, AutoModelForCausalLM

from jobs.errors import FactrecallError
from jobs.run import model as models
from jobs.run.budget import free_disk
from jobs.run.checkpoints import check_model_path, snapshot_steps
from jobs.run.corpus import bio_entries, prompts
from jobs.run.people import generate_people
from jobs.run.pipeline import PHASE_STREAM
from jobs.run.spec import Phase
from jobs.run.tokenizer import ANSWER_END, encode_targets, load_tokenizer, train_word_tokenizer
from jobs.run.train import curve_interval, plan_batches
from jobs.shown import markup
from jobs.study.costs import batch_tokens, shares, sweep_seconds, training_memory
from jobs.study.plan import PAPER_MODELS, Study
from jobs.study.rate import gemm_rate
from jobs.study.where import dumped_sites
from jobs.words import ATTRIBUTES, BIO_FORMATS, FORMATS

DEFAULT_TFLOPS = 100.0
BOUNDARY_SAMPLE = 2000  # prompts checked at random, on top of one for every template and answer value
# The paper's Table 1: hours for one run of Llama-3.2-3B on an A100 40GB.
PAPER_HOURS = {"bio": 10.37, "stage": 4.36, "mix": 22.16}


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def _n(x: float) -> str:
    """1,234 -> 1.2k; 2,623,280 -> 2.6M: numbers that fit a narrow table."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:g}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 5400 else f"{seconds / 60:,.1f} min"


def _model(spec, tok):
    """The model on the meta device (shapes only, no memory), and its configuration."""
    with torch.device("meta"):
        if spec.model.path is None:
            return models.build_model(spec.model, tok, spec.seed)
        config = AutoConfig.from_pretrained(spec.model.path, local_files_only=True)
        return AutoModelForCausalLM.from_config(config)


def compute_parameters(model) -> tuple[int, int]:
    """(all parameters, those a token's compute passes through)."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embed
    return total, total - embed.numel() + (embed.numel() if tied else 0)


def boundary_sample(all_prompts, seed: int, size: int = BOUNDARY_SAMPLE) -> list:
    """The prompts whose answer boundary the dry run checks: one for every (attribute, answer value),
    one for every (attribute, format, last three words before the answer: the template's end), and
    `size` more at random. A tokenizer that merges some template or some value with what follows
    shows in this sample; the run itself checks every prompt before it trains."""
    chosen: dict[tuple, int] = {}
    for i, p in enumerate(all_prompts):
        chosen.setdefault(("answer", p.attribute, p.answer), i)
        for fmt in ("bio_long", "bio_short", "qa"):
            # The template's end: the last three words that are not capitalised (a name never is).
            chosen.setdefault(
                (fmt, p.attribute, tuple([w for w in p.text(fmt).split() if not w[:1].isupper()][-3:])), i
            )
    picked = set(chosen.values())
    rest = np.random.default_rng(seed).permutation(len(all_prompts))
    picked.update(int(i) for i in rest[:size])
    return [all_prompts[i] for i in sorted(picked)]


def _lengths(tok, texts: list[str]) -> np.ndarray:
    """Token counts (with special tokens, as training encodes), straight from the fast tokenizer."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return np.array([len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=True)])
    return np.array([len(ids) for ids in tok(texts)["input_ids"]])


def example_lengths(phase: Phase, tok, bio_texts: list[str], all_prompts) -> np.ndarray:
    """The lengths of `phase`'s training examples, in `jobs.run.pipeline.training_examples`'s order:
    each BIO entry, then each QA-in question with its answer and the closing period (the tokens of
    question + answer, given the boundary holds)."""
    lengths = []
    if "bio" in phase.sets:
        lengths.append(_lengths(tok, bio_texts))
    if "qa_in" in phase.sets:
        lengths.append(_lengths(tok, [f"{p.qa} {p.answer}{ANSWER_END}" for p in all_prompts if p.split == "qa_in"]))
    return np.concatenate(lengths)


def fit_verdict(memory: dict, memory_checkpointed: dict, gpu_bytes: float | None, checkpointing: bool) -> str | None:
    """Whether training fits `gpu_bytes` (with 10% left to the CUDA context and fragmentation), in
    words, with what to change when it does not; None with no GPU to judge against."""
    if not gpu_bytes:
        return None
    usable = 0.9 * gpu_bytes
    if memory["total"] <= usable:
        return f"fits a {_gb(gpu_bytes)} GPU ({_gb(usable - memory['total'])} to spare)"
    if not checkpointing and memory_checkpointed["total"] <= usable:
        return (
            f"does not fit a {_gb(gpu_bytes)} GPU; with --set train.gradient_checkpointing=true it needs "
            f"{_gb(memory_checkpointed['total'])} and fits"
        )
    if memory["weights_optimizer"] > usable:
        return (
            f"does not fit a {_gb(gpu_bytes)} GPU: the fp32 weights and AdamW state alone take "
            f"{_gb(memory['weights_optimizer'])}; use a GPU of at least {_gb(memory_checkpointed['total'] / 0.9)}"
        )
    return (
        f"does not fit a {_gb(gpu_bytes)} GPU even with gradient checkpointing; lower the batch size "
        "(--set train.mix.batch_size=..., likewise bio and qa) or train.row_len"
    )


def plan(study: Study, tflops: float | None = None, gpu_memory: float | None = None) -> dict:
    """Everything `print_plan` shows, as numbers."""
    elsewhere = bool(tflops or gpu_memory)  # a plan for another machine: this one's free disk says nothing
    spec = study.runs[0][0]
    device = models.pick_device(spec.device)  # refuses cuda where there is none
    threads = models.use_cores()  # the threads the runs will have (refuses a bad $OMP_NUM_THREADS, as they would)
    if spec.model.path is not None:
        check_model_path(spec.model.path, spec.train.row_len if spec.train.packing else None)
    people = generate_people(spec.data, spec.seed)
    entries = bio_entries(people, spec.data, spec.seed)
    all_prompts = prompts(people, entries)
    bio_texts = [e.text for e in entries]
    if spec.model.path is None:
        tok = train_word_tokenizer(bio_texts + [f"{p.qa} {p.answer}." for p in all_prompts])
    else:
        tok = load_tokenizer(spec.model.path)
    checked = boundary_sample(all_prompts, spec.seed)
    targets = encode_targets(tok, checked)  # the answer boundary, as the run checks it
    model = _model(spec, tok)
    total, n = compute_parameters(model)
    config = model.config

    phases, longest = [], 0
    for phase in spec.phases():
        lengths = example_lengths(phase, tok, bio_texts, all_prompts)
        longest = max(longest, int(lengths.max()))
        if spec.train.packing and lengths.max() > spec.train.row_len:
            raise FactrecallError(
                f"an example has {lengths.max()} tokens with this tokenizer, more than "
                f"train.row_len={spec.train.row_len}; raise it with --set train.row_len=..."
            )
        batches = plan_batches(lengths, phase.settings, spec.train, seed=[spec.seed, PHASE_STREAM[phase.name]])
        real, computed, widest = batch_tokens(batches, lengths, spec.train.row_len if spec.train.packing else None)
        phases.append(
            {
                "phase": phase.name,
                "steps": len(batches),
                "examples": len(lengths),
                "tokens": real,
                "computed_tokens": computed,
                "batch_tokens": widest,
                "flops": 6 * n * computed,
                "snapshots": len(snapshot_steps(len(batches), spec.train.snapshots)),
            }
        )
    bytes_act = 2 if device.type == "cuda" or gpu_memory else 4
    peak_tokens = max(p["batch_tokens"] for p in phases)
    shape = (total, peak_tokens, config.num_hidden_layers, config.hidden_size, config.vocab_size, bytes_act)
    checkpointing = spec.train.gradient_checkpointing
    memory = training_memory(*shape, checkpointing=checkpointing)
    if checkpointing:
        for p in phases:
            p["flops"] = p["flops"] * 8 // 6  # one more forward pass in the backward
    if gpu_memory is None and device.type == "cuda":
        gpu_memory = torch.cuda.get_device_properties(device).total_memory / 1e9
    gpu_bytes = gpu_memory * 1e9 if gpu_memory else None
    verdict = fit_verdict(memory, training_memory(*shape, checkpointing=True), gpu_bytes, checkpointing)

    n_people = len(people)
    eval_prompts = 6 * n_people * 2  # BIO: every person; QA in + QA out: every person again
    snapshot_models = sum(p["snapshots"] for p in phases)
    models_main = 1 + len(phases)
    prompt_tokens = {fmt: float(_lengths(tok, [p.text(fmt) for p in all_prompts[:3000]]).mean()) for fmt in FORMATS}
    answer_tokens = float(np.mean([len(t.ids) for t in targets]))
    dump_flops = 2 * n * len(all_prompts) * sum(prompt_tokens.values())
    per_model_store = len(FORMATS) * config.num_hidden_layers * len(ATTRIBUTES) * n_people * config.hidden_size * 2
    disk = {
        "checkpoints": 4 * total * (1 + len(phases)) if spec.model.path is None else 4 * total * len(phases),
        "snapshots": 4 * total * snapshot_models,
        "activations": per_model_store * models_main,
        "trajectory": per_model_store * snapshot_models,
        "optimizer_while_training": 12 * total,
    }
    # The report's sites store (jobs.study.where): Stage's and Mix's vectors at every site, float16.
    sites = dumped_sites(study.sites)
    per_site = per_model_store * len(PAPER_MODELS)
    disk["sites"] = per_site * len(sites)
    disk["total"] = sum(v for k, v in disk.items() if k != "optimizer_while_training")
    free = free_disk(study.workspace)
    runs = len(study.runs)
    # The sites are refused where they are what does not fit this machine (not in a plan for another one)
    if not elsewhere and free is not None and (disk["total"] - disk["sites"]) * runs <= free < disk["total"] * runs:
        raise FactrecallError(
            f"this study needs about {_gb(disk['total'] * len(study.runs))} of disk for its {len(study.runs)} "
            f"runs, of which the report's {len(sites)} sites take {_gb(per_site)} a site a run, more than the "
            f"{_gb(free)} free under {study.workspace}; name fewer with --sites, use fewer people, or free space"
        )
    # Stage, Mix and the untrained baseline with both BIO formats; then the trajectory's: bio, and each snapshot.
    sweeps = (len(PAPER_MODELS) + 1) * len(ATTRIBUTES) * len(BIO_FORMATS) + (1 + snapshot_models) * len(ATTRIBUTES)
    # The interventions the report reads (jobs.run.patch): for Stage and Mix, each QA-out person's job
    # prompt decoded unpatched twice (QA, BIO) and at every layer under 6 patches and 3 erasures.
    n_out = sum(p.split == "qa_out" for p in people)
    patch_decodes = len(PAPER_MODELS) * n_out * (2 + config.num_hidden_layers * 9)

    eval_tokens = (prompt_tokens["bio_long"] + prompt_tokens["qa"]) / 2 + answer_tokens  # half BIO, half QA
    split_sizes = [
        6 * n_people,
        sum(p.split == "qa_in" for p in all_prompts),
        sum(p.split == "qa_out" for p in all_prompts),
    ]
    curve_samples = sum(
        -(-p["steps"] // every) if (every := curve_interval(p["steps"], spec.train.eval_every)) else 0 for p in phases
    )
    questions = eval_prompts * (models_main + snapshot_models) + curve_samples * sum(
        min(spec.train.curve_questions, size) for size in split_sizes
    )
    computes = models.computes_in(device, spec.train.precision)
    probe = None
    if device.type == "cuda" or gpu_bytes or tflops:  # a GPU, here or elsewhere, or a rate given
        flat = (tflops or DEFAULT_TFLOPS) * 1e12
        rates, rate_from = (
            {"train": flat, "eval": flat, "forward": flat},
            f"{(tflops or DEFAULT_TFLOPS):g} TFLOP/s (--tflops)",
        )
    else:
        probe = gemm_rate(config, computes, peak_tokens)
        share = shares(computes, config.hidden_size)
        rates = {work: probe["flops_per_s"] * share[work] for work in share}
        rate_from = (
            f"{rates['train'] / 1e9:,.3g} GFLOP/s training: this CPU's {computes} matrix products at the "
            f"model's shapes run at {probe['flops_per_s'] / 1e9:,.3g} GFLOP/s ({probe['threads']} threads, "
            f"the best measured on this machine; load now {os.getloadavg()[0]:.1f}), of which training reaches "
            f"{share['train']:.0%} at hidden {config.hidden_size} (benchmarks/RESULTS.md)"
        )
    for p in phases:
        p["seconds"] = p["flops"] / rates["train"]
    seeds = len(study.runs)
    train_s = sum(p["seconds"] for p in phases)
    eval_s = 2 * n * questions * eval_tokens / rates["eval"]
    dump_s = dump_flops * (models_main + snapshot_models) / rates["forward"]
    probes_s = sweeps * sweep_seconds(config.hidden_size, config.num_hidden_layers, threads)
    patch_s = 2 * n * patch_decodes * eval_tokens / rates["eval"]
    # The sites: one pass per model and prompt for all of them (hooks keep one token each; see
    # benchmarks/RESULTS.md for what several sites cost over one), a sweep per site and model (without
    # the control task's probes), and the causal test's decodes (6 patches a layer, no erasure).
    sites_s = (
        dump_flops * len(PAPER_MODELS) / rates["forward"]
        + len(PAPER_MODELS)
        * len(study.sites)
        * sweep_seconds(config.hidden_size, config.num_hidden_layers, threads)
        / 2  # noqa: E501
        + 2 * n * len(PAPER_MODELS) * n_out * (2 + config.num_hidden_layers * 6) * eval_tokens / rates["eval"]
    )
    rate = rates["train"]
    return {
        "study": study.name,
        "folder": str(study.folder),
        "runs": [p.name for p in study.paths],
        "device": str(device),
        "model": spec.model.path or f"built-in Llama {spec.model.layers}x{spec.model.hidden}",
        "parameters": total,
        "compute_parameters": n,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "vocab": config.vocab_size,
        "people": n_people,
        "prompts": len(all_prompts),
        "boundary_checked": len(checked),
        "longest_example": longest,
        "phases": phases,
        "memory": memory,
        "gradient_checkpointing": checkpointing,
        "gpu_memory": gpu_bytes,
        "fits": verdict,
        "disk": disk,
        "eval_prompts": eval_prompts,
        "models_per_run": models_main,
        "snapshot_models": snapshot_models,
        "sweeps": sweeps,
        "rate": rate,
        "rate_from": rate_from,
        "precision": computes,
        "probe": probe,
        "questions_per_run": questions,
        "patch_decodes": patch_decodes,
        "seconds_per_run": {
            "train": train_s,
            "eval": eval_s,
            "dump": dump_s,
            "probes": probes_s,
            "interventions": patch_s,
            "sites": sites_s,
        },
        "seconds": (train_s + eval_s + dump_s + probes_s + patch_s + sites_s) * seeds,
        "sites": list(sites),
        "site_bytes": per_site,
        "threads": threads,
        "seeds": seeds,
        "preset": spec.preset,
    }


def print_plan(study: Study, console: Console, tflops: float | None = None, gpu_memory: float | None = None) -> dict:
    with console.status("validating: data, tokenizer, model, device"):
        info = plan(study, tflops, gpu_memory)
    console.print(
        f"[bold]reproduce {markup(info['study'])}[/bold] (dry run: nothing written) → {markup(info['folder'])}",
        soft_wrap=True,
    )
    for note in (info["probe"] or {}).get("notes", []):  # the GEMM record is advice: what was dropped from it
        console.print(f"[yellow]note:[/yellow] {markup(note)}", soft_wrap=True, highlight=False)
    console.print(
        f"runs: {', '.join(info['runs'])}; device {info['device']}; model {info['model']}: "
        f"{info['parameters']:,} parameters, {info['layers']} layers, hidden {info['hidden']}, "
        f"vocabulary {info['vocab']:,}",
        soft_wrap=True,
    )
    console.print(
        f"validated: settings, checkpoint, device, {info['people']:,} people's data (seed 0), the answer "
        f"boundary of {info['boundary_checked']:,} of its {info['prompts']:,} prompts (every template and answer "
        f"value; the run checks all), longest training example {info['longest_example']} tokens",
        soft_wrap=True,
    )
    t = Table(title="Training, per run (seed 0's data plan)", title_justify="left")
    for col in ("phase", "steps", "examples", "tokens", "computed", "FLOPs", "time", "snapshots"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    for p in info["phases"]:
        row = [
            p["phase"],
            f"{p['steps']:,}",
            f"{p['examples']:,}",
            _n(p["tokens"]),
            _n(p["computed_tokens"]),
            _n(p["flops"]),
            _hours(p["seconds"]) if p["seconds"] else "–",
            str(p["snapshots"]),
        ]
        t.add_row(*row)
    console.print(t)
    if info["preset"] == "paper":
        console.print(
            "the paper's Table 1 (Llama-3.2-3B on an A100 40GB, one run): "
            + ", ".join(f"{phase} {hours} h" for phase, hours in PAPER_HOURS.items())
        )
    mem, disk = info["memory"], info["disk"]
    console.print(
        f"memory while training: about {_gb(mem['total'])} ({_gb(mem['weights_optimizer'])} fp32 weights, "
        f"gradients and AdamW state; {_gb(mem['activations'])} activations and logits of the widest batch"
        + (", gradient checkpointing" if info["gradient_checkpointing"] else "")
        + ")",
        soft_wrap=True,
    )
    if info["fits"]:
        color = "green" if info["fits"].startswith("fits") else "yellow"
        console.print(f"[{color}]{info['fits']}[/{color}]", highlight=False)
    console.print(
        f"disk per run: about {_gb(disk['total'])} ({_gb(disk['checkpoints'])} checkpoints, "
        f"{_gb(disk['snapshots'])} snapshots, {_gb(disk['activations'])} activations.zarr, "
        f"{_gb(disk['trajectory'])} trajectory.zarr, {_gb(disk['sites'])} sites.zarr: "
        f"{len(info['sites'])} sites of {_gb(info['site_bytes'])} each; "
        f"{_gb(disk['optimizer_while_training'])} more while a phase trains)",
        soft_wrap=True,
    )
    console.print(
        f"evaluation: {info['eval_prompts']:,} questions for each of {info['models_per_run']} models and "
        f"{info['snapshot_models']} snapshots a run; probes: {info['sweeps']} sweeps a run (with their "
        f"control task's); interventions: {info['patch_decodes']:,} patched decodes a run",
        soft_wrap=True,
    )
    each = info["seconds_per_run"]
    console.print(
        f"time: about {_hours(info['seconds'])} for {info['seeds']} run{'s' * (info['seeds'] > 1)}, each "
        f"{_hours(each['train'])} training, {_hours(each['eval'])} evaluation ({info['questions_per_run']:,} "
        f"questions), {_hours(each['dump'])} dump, {_hours(each['probes'])} probes, "
        f"{_hours(each['interventions'])} interventions and {_hours(each['sites'])} sites; in {info['precision']} at "
        f"{info['rate_from']}",
        highlight=False,
        soft_wrap=True,
    )
    return info
