"""Models: the built-in Llama (random init, sized by the spec) or any local causal-LM checkpoint."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers.utils import logging as hf_logging
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from jobs.errors import FactrecallError, first_line
from jobs.run.spec import ModelSpec

# Our own progress bars and events say what happens; transformers' per-load bars would bury them.
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FactrecallError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FactrecallError(f"device {name!r} asked for, but torch sees no GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FactrecallError(f"device {name!r}: torch sees {torch.cuda.device_count()} GPU(s); use cuda:0 or auto")
    return device


def autocast(device: torch.device):
    """bf16 compute on a GPU, over fp32 weights: pure-bf16 AdamW loses updates below about 1/256 of
    a weight, which at the paper's lr of 1e-4 is most of warm-up, the cosine tail and all weight
    decay. (A 3B model then needs about 48 GB for weights, gradients and AdamW state.)"""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def use_all_cores() -> None:
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def build_model(spec: ModelSpec, tok: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama for the tokenizer's vocabulary; the same seed gives the same weights."""
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_model(path: str | Path, device: torch.device) -> PreTrainedModel:
    """A local checkpoint on `device` in fp32 (see `autocast` for bf16 on a GPU), with SDPA attention.
    A folder that is missing or damaged is one line naming it (never a hub lookup)."""
    if not (Path(path) / "config.json").is_file():
        raise FactrecallError(f"the checkpoint {path} is missing (no config.json there); if it is a phase of a run, "
                              "`factrecall-jobs resume RUN` trains it again")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32, attn_implementation="sdpa"
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise FactrecallError(f"cannot load a causal LM from {path} ({first_line(err)}): the checkpoint is damaged; "
                              "delete it, and `factrecall-jobs resume RUN` makes it again") from None
    return model.to(device)
