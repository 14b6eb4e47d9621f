"""Models: the built-in Llama (random init, sized by the spec) or any local causal-LM checkpoint."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

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


PRECISIONS = ("fp32", "bf16")
# The CPU flags (Linux's /proc/cpuinfo) of units that multiply bf16 natively: without one, bf16
# autocast on a CPU is emulated and slower than fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith(("flags", "Features")) for flag in line.split()}
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def computes_in(device: torch.device, precision: str) -> str:
    """The precision a run's `train.precision` gives on this device: bf16 on a GPU or on a CPU with
    bf16 units, else fp32 (`precision_note` says so in one line)."""
    if precision == "bf16" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())):
        return "bf16"
    return "fp32"


def precision_note(device: torch.device, precision: str) -> str | None:
    if computes_in(device, precision) != precision:
        return (
            f"train.precision is {precision}, but this {device.type.upper()} has no bf16 units "
            f"(none of {', '.join(BF16_CPU_FLAGS)} in /proc/cpuinfo): computing in fp32"
        )
    return None


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 compute over fp32 weights when `precision` is bf16 (and the device has bf16 units), the
    same on a CPU as on a GPU: matrix products in bf16, reductions, softmax and the loss in fp32
    (torch's autocast lists), and the weights, gradients and AdamW state in fp32, because pure-bf16
    AdamW loses updates below about 1/256 of a weight, which at the paper's lr of 1e-4 is most of
    warm-up, the cosine tail and all weight decay. No loss scaling: bf16 has fp32's exponent range."""
    if computes_in(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


EAGER_UP_TO_HIDDEN = 256  # the widest model `train.attention=auto` trains with eager attention (see below)


def training_attention(device: torch.device, asked: str = "auto", precision: str = "fp32", hidden: int = 0) -> str:
    """The attention implementation a training step uses: `asked`, or for auto eager for a small
    model (hidden size up to EAGER_UP_TO_HIDDEN) on a CPU computing in bf16, and SDPA elsewhere.
    Packed rows need a block-diagonal mask, which sends torch's CPU SDPA in bf16 to a masked flash
    kernel; for the cpu preset's model (hidden 128) its backward pass alone took a third of a step, and
    eager attention is 1.17x faster a step (0.89x in fp32). For SmolLM2-135M's shape (hidden 576) the
    products dominate and SDPA is 1.08x faster in bf16 (benchmarks/RESULTS.md, "runtime settings")."""
    if asked != "auto":
        return asked
    small = 0 < hidden <= EAGER_UP_TO_HIDDEN
    return "eager" if small and device.type == "cpu" and computes_in(device, precision) == "bf16" else "sdpa"


def use_cores() -> int:
    """Set torch's thread count, and return it: $OMP_NUM_THREADS when it is set (`factrecall-jobs
    --threads N` sets it, for this process and every job it starts), else every CPU in this
    process's affinity mask (what `taskset` or a Slurm allocation gives it, not the machine's count)."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    if asked:
        if not asked.isdigit() or int(asked) < 1:
            raise FactrecallError(
                f"OMP_NUM_THREADS={asked!r} is not a whole number of threads from 1; "
                "set it to one (or unset it: every CPU this process may use)"
            )
        threads = int(asked)
    else:
        threads = max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    return threads


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
        raise FactrecallError(
            f"the checkpoint {path} is missing (no config.json there); if it is a phase of a run, "
            "`factrecall-jobs resume RUN` trains it again"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32, attn_implementation="sdpa"
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise FactrecallError(
            f"cannot load a causal LM from {path} ({first_line(err)}): the checkpoint is damaged; "
            "delete it, and `factrecall-jobs resume RUN` makes it again"
        ) from None
    return model.to(device)
