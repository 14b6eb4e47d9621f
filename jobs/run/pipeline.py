"""The run, step by step. Each step reads the spec and earlier steps' files, writes its own files,
and marks itself done last; re-running the same command skips what is done and resumes the rest.

    data -> tokenizer -> init -> eval-untrained -> for each phase: train-<phase> -> eval-<phase> -> dump
    (with train.snapshots: -> eval-<phase>@<step> for each snapshot -> dump-trajectory)
"""

from __future__ import annotations

import math
import platform
import shutil
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from jobs.errors import RunFolderError, SpecError
from jobs.run import model as models
from jobs.run.checkpoints import check_model_path, checkpoint_path, snapshot_models, store_models
from jobs.run.corpus import Prompt, bio_entries, prompts
from jobs.run.curves import curves
from jobs.run.dump import DumpOptions, dump
from jobs.run.evaluate import EVAL_SETS, eval_sets, evaluate, majority_vote
from jobs.run.files import atomic_write_json, read_json, read_jsonl, read_rows, write_jsonl
from jobs.run.folder import RunFolder
from jobs.run.people import generate_people
from jobs.run.reuse import find_reusable_phase, reuse_phase, trained_files, training_inputs
from jobs.run.spec import Phase
from jobs.run.tokenizer import Target, check_vocabulary, encode_targets, load_tokenizer, train_word_tokenizer
from jobs.run.train import Example, plan_batches, train_phase

# How often (seconds) progress lines go to events.jsonl; the console listener sees every step.
PROGRESS_EVERY_S = 0.5
PHASE_STREAM = {"bio": 1, "stage": 2, "mix": 3, "qa": 4}


class _Throttle:
    def __init__(self, run: RunFolder, step: str, total: int):
        self.run, self.step, self.total, self.last, self.done = run, step, total, 0.0, 0
        self.first: tuple[int, float] | None = None  # (done, time) at the first report of this job
        self.t0 = time.perf_counter()
        run.emit("start", step=step, total=total)

    def __call__(self, done: int, **fields) -> None:
        self.done = done
        now = time.perf_counter()
        if self.first is None:
            self.first = (done, now)
        if now - self.last >= PROGRESS_EVERY_S or done >= self.total or "curve" in fields:
            self.last = now
            # The rate of this job's own work, from its first report on: a resumed phase starts with
            # the steps its checkpoint restored, which took this job no time.
            since, at = self.first
            rate = (done - since) / (now - at) if done > since and now > at else None
            eta = (self.total - done) / rate if rate else None
            self.run.emit(
                "progress",
                step=self.step,
                done=done,
                total=self.total,
                eta_s=None if eta is None else round(eta, 1),
                **fields,
            )


# -- data ----------------------------------------------------------------------------------------
def make_data(run: RunFolder) -> None:
    spec = run.spec
    if run.is_done("data"):
        return
    run.emit("start", step="data", total=None)  # every step says it starts (what `status` and the TUI show)
    people = generate_people(spec.data, spec.seed)
    entries = bio_entries(people, spec.data, spec.seed)
    data = run.path / "data"
    write_jsonl(data / "people.jsonl", [p.to_json() for p in people])
    write_jsonl(data / "bio.jsonl", [{"person": e.person, "text": e.text} for e in entries])
    write_jsonl(data / "prompts.jsonl", [vars(p) for p in prompts(people, entries)])
    n_in = sum(p.split == "qa_in" for p in people)
    run.mark_done(
        "data",
        outputs=[data / "people.jsonl", data / "bio.jsonl", data / "prompts.jsonl"],
        keep={"identity": spec.identity()},
        people=len(people),
        qa_in=n_in,
        qa_out=len(people) - n_in,
        bio_entries=len(entries),
    )


def load_prompts(run_path: Path) -> list[Prompt]:
    """One `Prompt` per (person, attribute), person-major, as written by the data step."""
    return read_rows(run_path / "data" / "prompts.jsonl", Prompt)


# -- tokenizer -----------------------------------------------------------------------------------
def tokenizer_dir(run: RunFolder) -> Path:
    return Path(run.spec.model.path) if run.spec.model.path else run.path / "tokenizer"


def make_tokenizer(run: RunFolder, all_prompts: list[Prompt]) -> tuple[PreTrainedTokenizerBase, list[Target]]:
    """Train (built-in) or load the tokenizer, check every prompt against it, and store the targets."""
    targets_file = run.path / "data" / "targets.jsonl"
    if run.is_done("tokenizer"):
        tok = load_tokenizer(tokenizer_dir(run))
        return tok, read_rows(targets_file, lambda first_token_id, ids: Target(first_token_id, tuple(ids)))
    run.emit("start", step="tokenizer", total=None)
    if run.spec.model.path is None:
        texts = [r["text"] for r in read_jsonl(run.path / "data" / "bio.jsonl")]
        texts += [f"{p.qa} {p.answer}." for p in all_prompts]
        tok = train_word_tokenizer(texts)
        tok.save_pretrained(run.path / "tokenizer")
    else:
        tok = load_tokenizer(run.spec.model.path)
        check_vocabulary(tok, run.spec.model.path)
    targets = encode_targets(tok, all_prompts)
    _check_row_len(run, tok, all_prompts, targets)
    write_jsonl(targets_file, [{"first_token_id": t.first_token_id, "ids": list(t.ids)} for t in targets])
    made = [run.path / "tokenizer" / "tokenizer.json"] if run.spec.model.path is None else []
    run.mark_done(
        "tokenizer",
        outputs=[targets_file, *made],
        inputs=[run.path / "data" / "prompts.jsonl", run.path / "data" / "bio.jsonl"],
        vocab=len(tok),
    )
    return tok, targets


def _check_row_len(
    run: RunFolder, tok: PreTrainedTokenizerBase, all_prompts: list[Prompt], targets: list[Target]
) -> None:
    """Refuse, before any training, examples that cannot fit a packed row."""
    if not run.spec.train.packing:
        return
    every_set = Phase("check", "init", ("bio", "qa_in"), run.spec.train.mix)
    longest = max(len(e.ids) for e in training_examples(every_set, tok, run, all_prompts, targets))
    if longest > run.spec.train.row_len:
        raise SpecError(
            f"an example has {longest} tokens with this tokenizer, more than train.row_len={run.spec.train.row_len}; "
            f"raise it, e.g. --set train.row_len={2 ** math.ceil(math.log2(longest))}"
        )


# -- the model ------------------------------------------------------------------------------------
def make_init(run: RunFolder, tok: PreTrainedTokenizerBase) -> None:
    if run.spec.model.path is not None or run.is_done("init"):
        return
    run.emit("start", step="init", total=None)
    model = models.build_model(run.spec.model, tok, run.spec.seed)
    folder = run.path / "checkpoints" / "init"
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    run.mark_done(
        "init",
        outputs=[folder / "model.safetensors"],
        inputs=[run.path / "data" / "targets.jsonl"],
        parameters=sum(p.numel() for p in model.parameters()),
    )


# -- training and evaluation ---------------------------------------------------------------------
def training_examples(
    phase: Phase, tok: PreTrainedTokenizerBase, run: RunFolder, all_prompts: list[Prompt], targets: list[Target]
) -> list[Example]:
    """BIO entries (loss on every token) and/or QA-in pairs (loss on the answer and its period)."""
    texts = [r["text"] for r in read_jsonl(run.path / "data" / "bio.jsonl")] if "bio" in phase.sets else []
    return examples_of(phase, tok, texts, all_prompts, targets)


def examples_of(
    phase: Phase, tok: PreTrainedTokenizerBase, bio_texts: list[str], all_prompts: list[Prompt], targets: list[Target]
) -> list[Example]:
    """`training_examples` from data in memory (what `reproduce --dry-run` plans with)."""
    examples: list[Example] = []
    if "bio" in phase.sets:
        examples += [Example(np.array(ids), 0) for ids in tok(bio_texts)["input_ids"]]
    if "qa_in" in phase.sets:
        chosen = [i for i, p in enumerate(all_prompts) if p.split == "qa_in"]
        heads = tok([all_prompts[i].qa for i in chosen])["input_ids"]
        examples += [Example(np.array(h + list(targets[i].ids)), len(h)) for h, i in zip(heads, chosen)]
    return examples


def run_phase(
    run: RunFolder,
    phase: Phase,
    tok: PreTrainedTokenizerBase,
    all_prompts: list[Prompt],
    targets: list[Target],
    sets: dict,
    reuse: bool = True,
) -> None:
    step = f"train-{phase.name}"
    if run.is_done(step):
        return
    if reuse and (source := find_reusable_phase(run, phase)) is not None:
        reuse_phase(run, phase, source)
        return
    spec = run.spec
    device = models.pick_device(spec.device)
    model = models.load_model(checkpoint_path(run, phase.start), device)
    examples = training_examples(phase, tok, run, all_prompts, targets)
    folder = run.path / "checkpoints" / phase.name
    curve_sets = {name: s.subset(spec.train.curve_questions, spec.seed) for name, s in sets.items()}

    def curve(m) -> dict:
        return {
            name: r["avg"]
            for name, r in evaluate(
                m, tok, curve_sets, spec.train.eval_batch_size, precision=spec.train.precision
            ).items()
        }

    # Each phase shuffles with its own stream, so adding a strategy to a run changes no other phase.
    plan = plan_batches(
        np.array([len(e.ids) for e in examples]), phase.settings, spec.train, seed=[spec.seed, PHASE_STREAM[phase.name]]
    )
    throttle = _Throttle(run, step, len(plan))
    summary = train_phase(
        model,
        tok,
        examples,
        plan,
        phase.settings,
        spec.train,
        folder=folder,
        progress=lambda info: throttle(info.pop("step"), **info),
        curve=curve,
    )
    final, partial = folder / "final", folder / "final.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tok.save_pretrained(partial)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    run.mark_done(
        step,
        outputs=trained_files(folder),
        inputs=training_inputs(run, phase),
        metrics=(("train", phase.name), summary),
        **{k: v for k, v in summary.items() if k != "curve"},
    )
    # The optimizer state is twice the model; once the phase is marked done it is dead weight.
    # (Killed before this line, a re-run finds the phase done and only this folder left over.)
    shutil.rmtree(folder / "last", ignore_errors=True)


def run_eval(
    run: RunFolder, name: str, tok: PreTrainedTokenizerBase, sets: dict, checkpoint: str | None = None
) -> None:
    """Score the model `checkpoint` (default: the phase `name`, or a snapshot `stage@120`) on every
    set into metrics[name] (metrics["snapshots"][name] for a snapshot)."""
    step = f"eval-{name}"
    if run.is_done(step):
        return
    device = models.pick_device(run.spec.device)
    weights = checkpoint_path(run, checkpoint or name)
    model = models.load_model(weights, device)
    throttle = _Throttle(run, step, sum(len(s.prompts) for s in sets.values()))
    t0 = time.perf_counter()
    result = evaluate(
        model,
        tok,
        sets,
        run.spec.train.eval_batch_size,
        progress=lambda n: throttle(throttle.done + n),
        precision=run.spec.train.precision,
    )
    seconds = time.perf_counter() - t0
    result["questions_per_s"] = round(throttle.total / seconds, 1)
    inside = [weights / "model.safetensors"] if weights.is_relative_to(run.path) else []
    run.mark_done(
        step,
        inputs=inside,
        metrics=(("snapshots", name) if "@" in name else (name,), result),
        **{s: result[s]["avg"] for s in EVAL_SETS},
    )


def run_dump(
    run: RunFolder,
    tok: PreTrainedTokenizerBase,
    all_prompts: list[Prompt],
    targets: list[Target],
    options: DumpOptions | None = None,
) -> dict:
    """The dump step: the activation store (see jobs/run/dump.py); with `options.trajectory`, the
    `dump-trajectory` step: the snapshots' store. Marked done once the run's own store holds every
    model; a dump elsewhere (`url`) or of some models only is never marked. No `options`: the
    defaults (`DumpOptions()`)."""
    if options is None:
        options = DumpOptions()
    step = "dump-trajectory" if options.trajectory else "dump"
    throttle: list[_Throttle] = []
    info = dump(
        run,
        tok,
        all_prompts,
        targets,
        options,
        on_start=lambda total: throttle.append(_Throttle(run, step, total)),
        progress=lambda n: throttle[0](throttle[0].done + n),
    )
    if options.url is None and info["models"] == store_models(run, options.trajectory):
        weights = [checkpoint_path(run, m) / "model.safetensors" for m in info["models"]]
        run.mark_done(
            step,
            inputs=[w for w in weights if w.is_relative_to(run.path)],
            keep={"fingerprint": info["fingerprint"]},
            **{k: v for k, v in info.items() if k not in ("url", "models", "fingerprint")},
        )
    return info


def record_environment(run: RunFolder, device) -> None:
    """Append this session's library versions and machine to env.json: faker's version decides the
    people a seed makes, torch's and the thread count the exact numbers a run reaches."""
    file = run.path / "env.json"
    try:
        sessions = read_json(file, "", default=[])
    except RunFolderError:  # a log of sessions, not a result: a damaged one starts again
        sessions = []
    if not isinstance(sessions, list):
        sessions = []
    sessions.append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(),
            **{lib: version(lib) for lib in ("torch", "transformers", "tokenizers", "faker", "numpy")},
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "device": str(device),
            "precision": models.computes_in(device, run.spec.train.precision),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        }
    )
    atomic_write_json(file, sessions)


def execute(run: RunFolder, reuse: bool = True, dump: bool = True) -> dict:
    """Run every step of `run.spec` that is not done yet; returns metrics.json's content. With
    `reuse`, a phase that another finished run in the workspace trained identically (same seed, data,
    model and settings of every phase up to it) is taken from there instead of trained again. With
    `dump`, the activation store is written last."""
    models.use_cores()
    device = models.pick_device(run.spec.device)
    record_environment(run, device)  # fails early on a missing device
    if (note := models.precision_note(device, run.spec.train.precision)) is not None:
        run.emit("note", text=note)
    if run.spec.model.path is not None:
        check_model_path(run.spec.model.path, run.spec.train.row_len if run.spec.train.packing else None)
    run.emit("run", status="running", phases=[p.name for p in run.spec.phases()])
    make_data(run)
    all_prompts = load_prompts(run.path)
    tok, targets = make_tokenizer(run, all_prompts)
    sets = eval_sets(all_prompts, targets)
    if "majority" not in run.metrics():
        run.update_metrics("majority", majority_vote(all_prompts))
    make_init(run, tok)
    run_eval(run, "untrained", tok, sets, checkpoint="init")
    for phase in run.spec.phases():
        run_phase(run, phase, tok, all_prompts, targets, sets, reuse=reuse)
        run_eval(run, phase.name, tok, sets)
    if any(m.get("curve") for m in run.metrics().get("train", {}).values()):
        curves([run.path], run.path / "curves.png")
    if dump and not run.is_done("dump"):
        run_dump(run, tok, all_prompts, targets)
    for name in snapshot_models(run):  # train.snapshots: the models along training, and their store
        run_eval(run, name, tok, sets)
    if dump and snapshot_models(run) and not run.is_done("dump-trajectory"):
        run_dump(run, tok, all_prompts, targets, DumpOptions(trajectory=True))
    run.emit("run", status="done")
    return run.metrics()
