"""One training phase (paper section 6.2): AdamW, linear warm-up then cosine decay, next-token loss.

Batches mix what the phase trains on (Mix: BIO and QA-in shuffled together). Examples are packed
into rows of `row_len` tokens from a shuffled order (first fit over a few open rows), never split.
Each example's position ids restart at 0, so transformers masks attention block-diagonally: packed
examples do not see each other, and training positions match evaluation's. Padding BIO (about 66
tokens) with QA (about 17) in one batch halved throughput on this CPU; bucketing by length restored
it but stopped Mix from mixing within a batch; packing keeps both.

Resuming is exact: the data plan is a function of the seed, and a checkpoint holds the weights, the
AdamW state and the step, so a resumed phase ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from jobs.errors import FactrecallError, first_line
from jobs.run.checkpoints import snapshot_dir, snapshot_steps
from jobs.run.files import digest, matches, read_json
from jobs.run.model import autocast, training_attention
from jobs.run.spec import PhaseSpec, TrainSpec

# Which examples each step sees is code, not only settings: bump this whenever `plan_batches` or
# `_pack` change it. Finished phases and mid-phase checkpoints record it, and a phase is reused or
# resumed only under the same version (1: rows filled one at a time; 2: first fit).
PLAN_VERSION = 2


@dataclass(frozen=True)
class Example:
    """Token ids of one training text; labels start at `loss_from` (0: every token, as for BIO)."""

    ids: np.ndarray
    loss_from: int


def plan_batches(
    lengths: np.ndarray, phase: PhaseSpec, train: TrainSpec, seed: int | list[int]
) -> list[list[np.ndarray]]:
    """The phase's whole data order: a list of batches, each a list of rows, each an array of
    example indices. Each epoch is a fresh shuffle; a fractional epoch takes a prefix of one."""
    rng = np.random.default_rng(seed)
    if train.packing and lengths.max() > train.row_len:
        # The pipeline refuses this with advice at the tokenizer step; reaching here is a caller's bug.
        raise ValueError(f"an example of {lengths.max()} tokens does not fit train.row_len={train.row_len}")
    rows: list[np.ndarray] = []
    needed_rows = phase.steps * phase.batch_size if phase.steps else None
    epoch = 0.0
    while True:
        order = rng.permutation(len(lengths))
        if phase.epochs is not None:
            if epoch >= phase.epochs:
                break
            take = min(1.0, phase.epochs - epoch)
            order = order[: max(1, round(take * len(order)))]
        rows += _pack(order, lengths, train.row_len) if train.packing else [order[i : i + 1] for i in range(len(order))]
        epoch += 1
        if needed_rows is not None and len(rows) >= needed_rows:
            rows = rows[:needed_rows]
            break
    return [rows[i : i + phase.batch_size] for i in range(0, len(rows), phase.batch_size)]


# Rows left open while packing: enough for a short example to fill the gap a long one left
# (on the cpu preset's Mix data, 96% of slots are real tokens against 83% filling one row at a
# time), few enough that a row still holds examples from one stretch of the shuffle.
OPEN_ROWS = 8


def _pack(order: np.ndarray, lengths: np.ndarray, row_len: int) -> list[np.ndarray]:
    """First fit over a few open rows: each example, in shuffled order, goes into the first open
    row with room for it, else opens a row; a row closes when the shortest example no longer fits
    (at once, if one example leaves no such room), or when it is the oldest and a ninth would be
    opened. Deterministic given `order`; never splits an example."""
    shortest = int(lengths.min())
    rows: list[np.ndarray] = []
    open_rows: list[tuple[int, list[int]]] = []  # (tokens used, example indices)
    for idx in order:
        n = int(lengths[idx])
        for k, (used, members) in enumerate(open_rows):
            if used + n <= row_len:
                members.append(int(idx))
                open_rows[k] = (used + n, members)
                if row_len - used - n < shortest:
                    rows.append(np.array(open_rows.pop(k)[1]))
                break
        else:
            if row_len - n < shortest:
                rows.append(np.array([int(idx)]))
                continue
            open_rows.append((n, [int(idx)]))
            if len(open_rows) > OPEN_ROWS:
                rows.append(np.array(open_rows.pop(0)[1]))
    rows += [np.array(members) for _, members in open_rows]
    return rows


def collate(rows: list[np.ndarray], examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows -> input_ids, labels (-100 where no loss) and per-example position_ids, padded to the
    longest row; the padding is a segment of its own, so it attends to nothing real."""
    width = max(sum(len(examples[i].ids) for i in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), -100, dtype=np.int64)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            ex = examples[i]
            n = len(ex.ids)
            ids[r, at : at + n] = ex.ids
            labels[r, at + ex.loss_from : at + n] = ex.ids[ex.loss_from :]
            pos[r, at : at + n] = np.arange(n)
            at += n
        pos[r, at:] = np.arange(width - at)
    return {
        "input_ids": torch.from_numpy(ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(pos),
    }


def packed_forward(model: PreTrainedModel, batch: dict[str, torch.Tensor]):
    """The model on a collated batch, with each packed example attending only to itself.
    transformers derives the block-diagonal mask from position ids only when no KV cache exists,
    and Llama makes one whenever `use_cache` is on: it must be off here."""
    return model(**batch, use_cache=False)


def loss_function(model: PreTrainedModel, train: TrainSpec) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """The training step's loss on a collated batch, as `train` asks it to be computed: with each
    block's activations recomputed in the backward pass (`gradient_checkpointing`: the memory of
    one block's activations instead of all of them), and/or through torch.compile (`compile`:
    dynamic shapes, since packed batches vary in width). Neither changes what is computed."""
    if train.gradient_checkpointing:
        if not model.supports_gradient_checkpointing:
            raise FactrecallError(
                f"a {model.config.model_type!r} model does not support gradient checkpointing; "
                "leave train.gradient_checkpointing off"
            )
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x names it so
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return packed_forward(model, batch).loss

    return torch.compile(loss, dynamic=True) if train.compile else loss


@torch.no_grad()
def check_packing(model: PreTrainedModel, examples: list[Example], pad_id: int) -> None:
    """Refuse to train packed rows with a model that lets packed examples see each other: one row
    of the first three examples must give each the logits it gets alone. transformers builds the
    block-diagonal mask from position ids for every supported family today; this catches a version
    or an attention implementation that does not."""
    device = next(model.parameters()).device
    chosen = examples[:3]
    batch = {k: v.to(device) for k, v in collate([np.arange(len(chosen))], chosen, pad_id).items()}
    was_training = model.training
    model.eval()
    try:
        packed = packed_forward(model, batch).logits[0].float()
        at, worst = 0, 0.0
        for ex in chosen:
            alone = model(input_ids=torch.from_numpy(ex.ids)[None].to(device), use_cache=False).logits[0].float()
            worst = max(
                worst, ((packed[at : at + len(ex.ids)] - alone).abs().max() / alone.abs().max().clamp_min(1e-6)).item()
            )
            at += len(ex.ids)
    finally:
        model.train(was_training)
    if worst > 1e-3:
        raise FactrecallError(
            f"packed examples attend to each other in this {model.config.model_type!r} model (logits differ by "
            f"{worst:.1e} of their scale; transformers {transformers.__version__}, attention "
            f"{model.config._attn_implementation!r}); train with --set train.packing=false"
        )


def lr_at(step: int, total: int, phase: PhaseSpec) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to `lr * min_lr_ratio` at `total`."""
    if step < phase.warmup_steps:
        return phase.lr * (step + 1) / phase.warmup_steps
    progress = (step - phase.warmup_steps) / max(1, total - phase.warmup_steps)
    floor = phase.lr * phase.min_lr_ratio
    return floor + (phase.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: PreTrainedModel, phase: PhaseSpec) -> torch.optim.AdamW:
    # Decay matrices only; norms' gains and biases are left alone (as nanoGPT and most LM recipes do).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": phase.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=phase.lr)


# -- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(folder: Path, model: PreTrainedModel, opt: torch.optim.Optimizer, state: dict) -> None:
    """Write `folder` whole or not at all: into `folder.new`, then swapped in by renames."""
    new, old = folder.with_name(folder.name + ".new"), folder.with_name(folder.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    model.save_pretrained(new)
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    save_file(tensors, new / "optimizer.safetensors", metadata={"param_groups": json.dumps(sd["param_groups"])})
    # The files' digests: a checkpoint whose weights were swapped for another's is not resumed from.
    files = {name: digest(new / name) for name in CHECKPOINT_FILES[:2]}
    (new / "state.json").write_text(json.dumps({**state, "files": files}))
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


def _checked_state(folder: Path, total: int) -> dict:
    """The state.json of checkpoint `folder`, if it describes a checkpoint of this plan whose files are
    the ones it wrote; a FactrecallError saying what does not fit otherwise."""
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise FactrecallError(f"{missing[0]} is missing")
    state = read_json(folder / "state.json", "")
    numbers = ("step", "total", "tokens")
    if (
        not isinstance(state, dict)
        or any(not isinstance(state.get(k), int) for k in numbers)
        or not isinstance(state.get("curve"), list)
        or not isinstance(state.get("train_seconds"), (int, float))
    ):
        raise FactrecallError("state.json is not a checkpoint's state")
    if state["total"] != total or state.get("plan", 1) != PLAN_VERSION:
        raise FactrecallError(
            f"it was made for another data plan ({state['total']} steps, plan version "
            f"{state.get('plan', 1)}; this code makes {total} steps, version {PLAN_VERSION})"
        )
    if not 0 <= state["step"] <= total:
        raise FactrecallError(f"state.json says step {state['step']} of {total}")
    for name, recorded in (state.pop("files", None) or {}).items():
        if not matches(folder / name, recorded):
            raise FactrecallError(f"{name} is not the file this checkpoint wrote (copied from elsewhere, or damaged)")
    return state


def _resume(
    last: Path, model: PreTrainedModel, opt: torch.optim.Optimizer, device: torch.device, total: int
) -> dict | None:
    """Load the phase's checkpoint: `last`, or `last.old` where a swap was cut short or `last` is
    damaged; returns its state, None when there is none. One that exists but cannot be resumed from
    (damaged, foreign, of another plan) is one line naming it and what to do."""
    problems = []
    for candidate in (last, last.with_name(last.name + ".old")):
        if not candidate.exists():
            continue
        try:
            state = _checked_state(candidate, total)
            load_weights(model, str(candidate / "model.safetensors"), device=str(device))
            load_optimizer(opt, candidate)
            return state
        except (FactrecallError, OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
            problems.append(f"{candidate.name}: {first_line(err)}")
    if problems:
        raise FactrecallError(
            f"the phase's checkpoint {last} cannot be resumed from ({'; '.join(problems)}); delete "
            f"{last} to train the phase from its start"
        )
    return None


def load_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    with safe_open(str(folder / "optimizer.safetensors"), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        for key in f.keys():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = f.get_tensor(key)
    opt.load_state_dict({"state": state, "param_groups": groups})


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[Callable[[], bool]]:
    """Ctrl-C during a step would save weights with half an AdamW update applied; instead the
    signal only raises a flag, which the loop checks between steps."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hit = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: hit.set())
    try:
        yield hit.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


# -- the loop ------------------------------------------------------------------------------------
ProgressFn = Callable[[dict], None]
CurveFn = Callable[[PreTrainedModel], dict]


def curve_interval(total: int, eval_every: int) -> int:
    """Steps between accuracy samples: `eval_every`, or less in a phase too short for 10 samples
    (Stage's QA phase is often a few hundred steps), so every phase's curve has a shape. 0: off."""
    return min(eval_every, max(1, math.ceil(total / 10))) if eval_every else 0


def save_snapshot(folder: Path, model: PreTrainedModel, step: int) -> Path:
    """The weights after `step`, as a Hugging Face folder `folder/snapshots/step-NNNNNN` (no
    optimizer state), written whole then renamed into place; a resumed phase writes it again."""
    target = snapshot_dir(folder, step)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def train_phase(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    examples: list[Example],
    plan: list[list[np.ndarray]],
    phase: PhaseSpec,
    train: TrainSpec,
    folder: Path,
    progress: ProgressFn,
    curve: CurveFn | None = None,
) -> dict:
    """Train `model` in place through `plan` (from `plan_batches`), resuming from `folder/last` if it exists.
    Calls `progress` after every step and `curve(model)` every `train.eval_every` steps, and keeps
    `train.snapshots` - 1 snapshots of the weights along the way (`snapshot_steps`). Returns the
    phase's summary: steps, tokens, seconds, tokens/s, final loss, and the curve."""
    device = next(model.parameters()).device
    total = len(plan)
    every = curve_interval(total, train.eval_every)
    keep = set(snapshot_steps(total, train.snapshots))
    opt = make_optimizer(model, phase)
    last = folder / "last"
    state = {
        "step": 0,
        "total": total,
        "plan": PLAN_VERSION,
        "tokens": 0,
        "train_seconds": 0.0,
        "loss": None,
        "curve": [],
    }
    state = _resume(last, model, opt, device, total) or state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    own_attention = model.config._attn_implementation
    step = saved_step = state["step"]
    consistent = True  # weights, optimizer and `state` describe the same step
    with _deferred_sigint() as interrupted:
        try:
            model.set_attn_implementation(
                training_attention(device, train.attention, train.precision, model.config.hidden_size)
            )
            if train.packing and step == 0:
                check_packing(model, examples, tok.pad_token_id)
            model.train()
            step_loss = loss_function(model, train)
            while step < total:
                if interrupted():
                    raise KeyboardInterrupt
                consistent = False
                t0 = time.perf_counter()
                batch = {k: v.to(device) for k, v in collate(plan[step], examples, tok.pad_token_id).items()}
                lr = lr_at(step, total, phase)
                for group in opt.param_groups:
                    group["lr"] = lr
                with autocast(device, train.precision):
                    loss = step_loss(batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                state["tokens"] += sum(len(examples[i].ids) for row in plan[step - 1] for i in row)
                state["train_seconds"] += time.perf_counter() - t0
                state["loss"] = loss.item()
                state["step"] = step
                consistent = True
                if curve is not None and every and (step % every == 0 or step == total):
                    model.eval()
                    state["curve"].append({"step": step, **curve(model)})
                    model.train()
                if step in keep:  # before the checkpoint: a checkpoint at or past it implies it exists
                    save_snapshot(folder, model, step)
                progress(
                    {
                        "step": step,
                        "loss": state["loss"],
                        "lr": lr,
                        "tokens_per_s": state["tokens"] / max(state["train_seconds"], 1e-9),
                        **(
                            {"curve": state["curve"][-1]}
                            if state["curve"] and state["curve"][-1]["step"] == step
                            else {}
                        ),
                    }
                )
                if step % train.checkpoint_every == 0 or step == total:
                    save_checkpoint(last, model, opt, state)
                    saved_step = step
        except KeyboardInterrupt:
            # Ctrl-C keeps the work done since the last checkpoint (a SIGKILL loses at most that much).
            if consistent and step > saved_step:
                save_checkpoint(last, model, opt, state)
            raise
        finally:
            if train.gradient_checkpointing:
                (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
            model.set_attn_implementation(own_attention)
    model.eval()
    summary = {
        "steps": total,
        "plan": PLAN_VERSION,
        "tokens": state["tokens"],
        "train_seconds": round(state["train_seconds"], 2),
        "tokens_per_s": round(state["tokens"] / max(state["train_seconds"], 1e-9), 1),
        "final_loss": state["loss"],
        "curve": state["curve"],
    }
    if device.type == "cuda":  # what this session of the phase held at its peak (benchmarks/gpu/check.py
        summary["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)  # holds the dry run's estimate to it)
    return summary
