"""Exact-match recall (paper section 2.2): greedily decode after the prompt and compare the decoded
tokens with the answer's tokens followed by "." -- per attribute and averaged, on three sets:
`bio` (prompt = BIO_long), `qa_in` (questions of people trained on QA) and `qa_out` (held out).

Decoding is batched with a KV cache: prompts are sorted by length so a batch wastes little
padding, left-padded, and decoded for as many tokens as the batch's longest answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from jobs.run.corpus import Prompt
from jobs.run.model import autocast
from jobs.run.tokenizer import Target
from jobs.words import ATTRIBUTES, EVAL_SETS


@dataclass(frozen=True)
class EvalSet:
    name: str
    prompts: list[str]
    targets: list[tuple[int, ...]]
    attributes: list[str]

    def subset(self, n: int, seed: int) -> EvalSet:
        """At most `n` items, the same ones for every call with this seed, in every attribute."""
        if n >= len(self.prompts):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.prompts), n, replace=False))
        return EvalSet(
            self.name,
            [self.prompts[i] for i in keep],
            [self.targets[i] for i in keep],
            [self.attributes[i] for i in keep],
        )


def eval_sets(prompts: list[Prompt], targets: list[Target]) -> dict[str, EvalSet]:
    out = {}
    for name in EVAL_SETS:
        fmt = "bio_long" if name == "bio" else "qa"
        chosen = [i for i, p in enumerate(prompts) if name == "bio" or p.split == name]
        out[name] = EvalSet(
            name,
            [prompts[i].text(fmt) for i in chosen],
            [targets[i].ids for i in chosen],
            [prompts[i].attribute for i in chosen],
        )
    return out


@torch.inference_mode()
def greedy_decode(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    lengths: list[int],
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
    before: Callable[[np.ndarray], None] | None = None,
) -> list[list[int]]:
    """The tokens greedy decoding produces after each prompt, up to lengths[i] of them (fewer where
    the model stops). Left-padded batches, so the last prompt token is the last column of every row;
    `before(rows)` is called before each batch's `generate` with the prompt indices it holds (an
    intervention sets its vectors for them there)."""
    device = next(model.parameters()).device
    encoded = tok(prompts, add_special_tokens=True)["input_ids"]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    produced: list[list[int]] = [[] for _ in prompts]
    pad = tok.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        new = max(lengths[i] for i in idx)
        # Purely greedy: no minimum length (it would forbid EOS and score the runner-up); a row that
        # stops early is padded and fails the comparison, as it should.
        config = GenerationConfig(max_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=pad)
        if before is not None:
            before(idx)
        with autocast(device, precision):
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        tail = out[:, width:].cpu().numpy()
        for row, i in enumerate(idx):
            produced[i] = tail[row, : lengths[i]].tolist()
        if progress is not None:
            progress(len(idx))
    return produced


def greedy_match(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    targets: list[tuple[int, ...]],
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """bool[len(prompts)]: does greedy decoding after prompt i produce exactly targets[i]?"""
    produced = greedy_decode(model, tok, prompts, [len(t) for t in targets], batch_size, progress, precision)
    return np.array([p == list(t) for p, t in zip(produced, targets)], dtype=bool)


def score(correct: np.ndarray, attributes: list[str]) -> dict[str, float]:
    """Percent exact match per attribute and `avg`, the mean over attributes (as the paper's Ave)."""
    attrs = np.array(attributes)
    per = {a: round(100 * float(correct[attrs == a].mean()), 2) for a in ATTRIBUTES if (attrs == a).any()}
    return {"avg": round(float(np.mean(list(per.values()))), 2), **per}


def evaluate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    sets: dict[str, EvalSet],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> dict[str, dict[str, float]]:
    was_training = model.training
    model.eval()
    # Every set in one decoding pass: batches are sorted by length across sets, and a set smaller
    # than a batch (a tiny run's, or a curve sample's) no longer pays a `generate` call of its own.
    correct = greedy_match(
        model,
        tok,
        [p for s in sets.values() for p in s.prompts],
        [t for s in sets.values() for t in s.targets],
        batch_size,
        progress,
        precision,
    )
    model.train(was_training)
    out, at = {}, 0
    for name, s in sets.items():
        out[name] = score(correct[at : at + len(s.prompts)], s.attributes)
        at += len(s.prompts)
    return out


def majority_vote(prompts: list[Prompt]) -> dict[str, dict[str, float]]:
    """Accuracy of always answering an attribute's most common value among the QA-in people (what a
    model could learn from the QA training answers alone), on each set."""
    common = {}
    for attribute in ATTRIBUTES:
        counts = Counter(p.answer for p in prompts if p.attribute == attribute and p.split == "qa_in")
        common[attribute] = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    out = {}
    for name in EVAL_SETS:
        chosen = [p for p in prompts if name == "bio" or p.split == name]
        correct = np.array([p.answer == common[p.attribute] for p in chosen])
        out[name] = score(correct, [p.attribute for p in chosen])
    return out
