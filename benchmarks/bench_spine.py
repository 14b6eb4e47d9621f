"""Training tokens/s and evaluation questions/s of the spine, each against a baseline measured in the
same run on the same model and data (these machines are shared and noisy: read the ratios).

- training: our packed loop (`jobs.run.train.train_phase`) vs `transformers.Trainer` with the usual
  padded batches, on Mix data (BIO and QA-in shuffled together), the cpu preset's model;
- evaluation: our batched greedy decoding (`jobs.run.evaluate.greedy_match`) vs `model.generate`
  called one question at a time;
- packing: the cpu preset's (first fit over a few open rows, `jobs.run.train._pack`, in rows of 288)
  vs the packing before it (rows of 128 filled one at a time), on BIO-only data (the BIO phase)
  and on Mix data: the share of a batch's slots that hold real tokens, and training tokens/s.

    pip install -e '.[bench]'
    python benchmarks/bench_spine.py [--people 1000] [--steps 30] [--questions 300] [--only packing]

Prints a markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import jobs.run.train
from jobs.run.corpus import bio_entries, prompts
from jobs.run.evaluate import eval_sets, greedy_match
from jobs.run.model import build_model, use_cores
from jobs.run.people import generate_people
from jobs.run.pipeline import PHASE_STREAM
from jobs.run.spec import build_spec
from jobs.run.tokenizer import encode_targets, train_word_tokenizer
from jobs.run.train import Example, plan_batches, train_phase


def one_row_at_a_time(order: np.ndarray, lengths: np.ndarray, row_len: int) -> list[np.ndarray]:
    """The baseline packer: fill a row in shuffled order, start the next when an example does not fit."""
    rows, start, used = [], 0, 0
    for k, idx in enumerate(order):
        if used + lengths[idx] > row_len:
            rows.append(order[start:k])
            start, used = k, 0
        used += lengths[idx]
    rows.append(order[start:])
    return rows


def packed_plan(examples, spec, packer=None):
    """The Mix phase's plan, packed by `packer` (default: ours)."""
    ours = jobs.run.train._pack
    jobs.run.train._pack = packer or ours
    try:
        return plan_batches(
            np.array([len(e.ids) for e in examples]), spec.train.mix, spec.train, seed=[0, PHASE_STREAM["mix"]]
        )
    finally:
        jobs.run.train._pack = ours


def slot_use(plan, examples) -> float:
    """Real tokens / slots computed (each batch is padded to its longest row), over the whole plan."""
    real = slots = 0
    for batch in plan:
        lengths = [sum(len(examples[i].ids) for i in row) for row in batch]
        real += sum(lengths)
        slots += len(batch) * max(lengths)
    return real / slots


def packing(spec, tok, examples, steps: int) -> list[str]:
    """The cpu preset's packing (first fit, its row length and rows a step) against the packing
    before it (rows of 128 filled one at a time, 32 rows a step), with first fit at 128 between."""
    before = spec.model_copy(
        update={
            "train": spec.train.model_copy(
                update={
                    "row_len": 128,
                    **{p: getattr(spec.train, p).model_copy(update={"batch_size": 32}) for p in ("bio", "mix")},
                }
            )
        }
    )
    rows = []
    bio = [e for e in examples if e.loss_from == 0]
    for name, data, phase in (("BIO phase (BIO only)", bio, "bio"), ("Mix phase (BIO + QA-in)", examples, "mix")):
        # The phase's own batch size: plan it as the mix phase with the phase's settings.
        as_phase = lambda s: s.model_copy(update={"train": s.train.model_copy(update={"mix": getattr(s.train, phase)})})  # noqa: E731
        ours, middle = as_phase(spec), as_phase(before)
        plans = {
            "ours": packed_plan(data, ours),
            "ff128": packed_plan(data, middle),
            "base": packed_plan(data, middle, one_row_at_a_time),
        }
        use = {k: slot_use(v, data) for k, v in plans.items()}
        rows.append(
            f"| {name}: real tokens / slots, whole plan (first fit at 128: {use['ff128']:.3f}) "
            f"| {use['ours']:.3f} | {use['base']:.3f} | {use['ours'] / use['base']:.2f}x |"
        )
        t_ours = ours_train(ours, tok, data, steps, plans["ours"])
        t_base = ours_train(middle, tok, data, steps, plans["base"])
        rows.append(
            f"| {name}: training tokens/s, first {steps} steps | {t_ours:,.0f} | {t_base:,.0f} | "
            f"{t_ours / t_base:.2f}x |"
        )
    return rows


def mix_examples(people: int):
    spec = build_spec("cpu", data={"people": people})
    ppl = generate_people(spec.data, spec.seed)
    entries = bio_entries(ppl, spec.data, spec.seed)
    all_prompts = prompts(ppl, entries)
    tok = train_word_tokenizer([e.text for e in entries] + [f"{p.qa} {p.answer}." for p in all_prompts])
    targets = encode_targets(tok, all_prompts)
    examples = [Example(np.array(ids), 0) for ids in tok([e.text for e in entries])["input_ids"]]
    chosen = [i for i, p in enumerate(all_prompts) if p.split == "qa_in"]
    heads = tok([all_prompts[i].qa for i in chosen])["input_ids"]
    examples += [Example(np.array(h + list(targets[i].ids)), len(h)) for h, i in zip(heads, chosen)]
    return spec, tok, examples, eval_sets(all_prompts, targets)


def ours_train(spec, tok, examples, steps: int, plan=None) -> float:
    model = build_model(spec.model, tok, seed=0)
    plan = (plan or packed_plan(examples, spec))[:steps]
    with tempfile.TemporaryDirectory() as tmp:
        train = spec.train.model_copy(update={"checkpoint_every": 10**9, "eval_every": 0})
        summary = train_phase(model, tok, examples, plan, spec.train.mix, train, Path(tmp), progress=lambda _: None)
    # Both sides time every step, the first (slow) ones included.
    return summary["tokens"] / summary["train_seconds"]


def trainer_train(spec, tok, examples, steps: int, batch_size: int) -> float:
    from transformers import Trainer, TrainingArguments

    model = build_model(spec.model, tok, seed=0)
    rows = []
    for e in examples:
        labels = e.ids.copy()
        labels[: e.loss_from] = -100
        rows.append({"input_ids": e.ids.tolist(), "labels": labels.tolist()})

    def collate(batch):
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    counted = {"tokens": 0}

    def counting_collate(batch):
        out = collate(batch)
        counted["tokens"] += int(out["attention_mask"].sum())
        return out

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=spec.train.mix.lr,
            lr_scheduler_type="cosine",
            weight_decay=spec.train.mix.weight_decay,
            max_grad_norm=1.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collate)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return counted["tokens"] / seconds


def eval_speed(spec, tok, sets, questions: int) -> tuple[float, float, bool]:
    model = build_model(spec.model, tok, seed=0).eval()
    s = sets["qa_out"].subset(questions, seed=0)
    t0 = time.perf_counter()
    batched = greedy_match(model, tok, s.prompts, s.targets, batch_size=spec.train.eval_batch_size)
    ours = len(s.prompts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    single = []
    with torch.inference_mode():
        for prompt, target in zip(s.prompts, s.targets):
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            out = model.generate(ids, max_new_tokens=len(target), do_sample=False, pad_token_id=tok.pad_token_id)
            single.append(out[0, ids.shape[1] :].tolist() == list(target))
    base = len(s.prompts) / (time.perf_counter() - t0)
    return ours, base, bool((np.array(single) == batched).all())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--only", choices=("training", "evaluation", "packing"), help="run one measure (default: all)")
    args = ap.parse_args()
    use_cores()
    spec, tok, examples, sets = mix_examples(args.people)
    mean_len = np.mean([len(e.ids) for e in examples])
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"data: {args.people} people, {len(examples)} Mix examples (mean {mean_len:.1f} tokens); model "
        f"{spec.model.layers}x{spec.model.hidden}; rows of {spec.train.row_len} tokens, "
        f"{spec.train.mix.batch_size} a step\n"
    )
    print("| measure | factrecall | baseline | ratio |")
    print("|---|---|---|---|")
    if args.only in (None, "training"):
        # Trainer's batch holds as many examples as one of our packed batches does on average.
        per_row = spec.train.row_len / mean_len
        trainer_batch = max(1, round(spec.train.mix.batch_size * per_row * 0.9))
        ours = ours_train(spec, tok, examples, args.steps)
        base = trainer_train(spec, tok, examples, args.steps, trainer_batch)
        print(
            f"| training tokens/s (packed rows of {spec.train.row_len} vs Trainer, padded batches of {trainer_batch}) "
            f"| {ours:,.0f} | {base:,.0f} | {ours / base:.2f}x |"
        )
    if args.only in (None, "evaluation"):
        e_ours, e_base, same = eval_speed(spec, tok, sets, args.questions)
        print(
            f"| evaluation questions/s (batched greedy, KV cache vs generate one at a time; same answers: {same}) "
            f"| {e_ours:,.0f} | {e_base:,.1f} | {e_ours / e_base:.1f}x |"
        )
    if args.only in (None, "packing"):
        print("\n".join(packing(spec, tok, examples, args.steps)))


if __name__ == "__main__":
    main()
