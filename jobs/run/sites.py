"""Capture sites: the hooks of every block, read (the dump) and written (`patch`) by one object each,
defined here once per model family. A site is a hook x a token position (`store.names`: `hook@position`,
TransformerLens's names; positions are jobs/run/positions.py). What each hook is, per family:

    hook        what it is                                  read from / written into
    resid_pre   the residual stream entering the block      the block's input (a pre-hook)
    resid_mid   residual stream + attention output,         Llama, Mistral, Qwen2, GPT-2: the post-attention
                before the MLP (the paper's h)              norm's input; GPT-NeoX: block input + attn_out (its
                                                            parallel residual has no module that sees it).
                                                            Written as attn_out := new - x, so that x + attn_out
                                                            (what the MLP reads and the stream carries) is new
    resid_post  the residual stream leaving the block       the block's output
    attn_out    the attention's contribution to the stream  the attention module's output (Llama: `self_attn`,
                                                            GPT-2: `attn`, with its output projection and
                                                            dropout; GPT-NeoX: `post_attention_dropout`)
    mlp_out     the MLP's contribution to the stream        `mlp`'s output (GPT-NeoX: `post_mlp_dropout`)

A written attn_out or mlp_out is exactly what the rest of the block adds to the residual stream (and,
for GPT-NeoX without the parallel residual, what its MLP reads through x + attn_out).

Why hand-written hooks and not nnsight or TransformerLens: docs/sites.md. In short, nnsight addresses
module outputs by path, so this table would remain (and resid_mid is no module's output in a Llama or
a GPT-NeoX block), and TransformerLens would run its own re-implementation, not the trained model. We
keep TransformerLens's names.

One forward pass reads every site asked for, in every block at once; each hook keeps only the chosen
position of each row, so memory is (sites, layers, batch, hidden), never a whole sequence per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from jobs.errors import FactrecallError
from jobs.run.checkpoints import SUPPORTED_FAMILIES
from store.names import HOOKS


@dataclass(frozen=True)
class Family:
    """Where a family's blocks and their parts are."""

    blocks: str  # the decoder blocks, under `model.base_model`
    attention: str  # the module (in a block) whose output is attn_out as the block adds it
    mlp: str  # the module whose output is mlp_out as the block adds it
    mid_norm: str | None  # the module whose input is resid_mid; None: none sees it (x + attn_out)


_LLAMA = Family("layers", "self_attn", "mlp", "post_attention_layernorm")
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt2": Family("h", "attn", "mlp", "ln_2"),
    "gpt_neox": Family("layers", "post_attention_dropout", "post_mlp_dropout", None),
}
assert set(FAMILIES) == set(SUPPORTED_FAMILIES), "jobs.run.checkpoints.SUPPORTED_FAMILIES lists what sites read"


def family(model: PreTrainedModel) -> Family:
    kind = model.config.model_type
    if kind not in FAMILIES:
        raise FactrecallError(
            f"cannot read sites in a {kind!r} model: supported are {', '.join(sorted(FAMILIES))} "
            "(Llama-family, GPT-2, GPT-NeoX/Pythia checkpoints)"
        )
    return FAMILIES[kind]


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    return getattr(model.base_model, family(model).blocks)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _with_first(output, first):
    return (first, *output[1:]) if isinstance(output, tuple) else first


def _block_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class Capture:
    """Hooks that read `sites` ({hook: positions}) in every block during a forward pass.

    with Capture(model, {"resid_mid": ["last"], "mlp_out": ["last", "subject_last"]}) as capture:
        out = capture.run(input_ids, attention_mask, {"last": t, "subject_last": s})
        out["mlp_out", "subject_last"]    # float32 (layers, batch, hidden)
    """

    def __init__(self, model: PreTrainedModel, sites: dict[str, Iterable[str]]):
        self.model, self.family = model, family(model)
        self.blocks = decoder_blocks(model)
        unknown = sorted(set(sites) - set(HOOKS))
        if unknown:
            raise FactrecallError(f"unknown hook {unknown[0]!r}: hooks are {', '.join(HOOKS)}")
        self.sites = {hook: tuple(positions) for hook, positions in sites.items()}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.rows: torch.Tensor | None = None
        self.at: dict[str, torch.Tensor] = {}
        self.found: dict[tuple[str, str], list[torch.Tensor | None]] = {}
        self._inputs: dict[str, list[torch.Tensor | None]] = {}

    def _pick(self, t: torch.Tensor, position: str) -> torch.Tensor:
        return t[self.rows, self.at[position]].float()

    def _keep(self, hook: str, i: int, t: torch.Tensor) -> None:
        for position in self.sites[hook]:
            self.found[hook, position][i] = self._pick(t, position)

    def __enter__(self) -> Capture:
        fam, hooks = self.family, self.sites
        needs_input = "resid_pre" in hooks or ("resid_mid" in hooks and fam.mid_norm is None)
        for i, block in enumerate(self.blocks):
            if needs_input:
                self.handles.append(block.register_forward_pre_hook(self._on_input(i), with_kwargs=True))
            if "resid_mid" in hooks and fam.mid_norm is not None:
                norm = getattr(block, fam.mid_norm)
                self.handles.append(norm.register_forward_pre_hook(lambda m, a, i=i: self._keep("resid_mid", i, a[0])))
            if "attn_out" in hooks or ("resid_mid" in hooks and fam.mid_norm is None):
                self.handles.append(getattr(block, fam.attention).register_forward_hook(self._on_attention(i)))
            if "mlp_out" in hooks:
                mlp = getattr(block, fam.mlp)
                self.handles.append(mlp.register_forward_hook(lambda m, a, o, i=i: self._keep("mlp_out", i, _first(o))))
            if "resid_post" in hooks:
                self.handles.append(
                    block.register_forward_hook(lambda m, a, o, i=i: self._keep("resid_post", i, _first(o)))
                )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _on_input(self, i: int):
        def hook(module, args, kwargs):
            x = _block_input(args, kwargs)
            if "resid_pre" in self.sites:
                self._keep("resid_pre", i, x)
            if "resid_mid" in self.sites and self.family.mid_norm is None:
                for position in self.sites["resid_mid"]:
                    self._inputs[position][i] = self._pick(x, position)

        return hook

    def _on_attention(self, i: int):
        def hook(module, args, output):
            out = _first(output)
            if "attn_out" in self.sites:
                self._keep("attn_out", i, out)
            if "resid_mid" in self.sites and self.family.mid_norm is None:
                for position in self.sites["resid_mid"]:
                    self.found["resid_mid", position][i] = self._inputs[position][i] + self._pick(out, position)

        return hook

    @torch.inference_mode()
    def run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: dict[str, torch.Tensor]
    ) -> dict[tuple[str, str], torch.Tensor]:
        """Forward the base model (no LM head) and return each site's vectors, float32 (layers,
        batch, hidden), keyed (hook, position); `positions[p]` holds position p's token index per row."""
        if not self.handles:
            raise RuntimeError("use Capture as a context manager")
        device = input_ids.device
        self.rows = torch.arange(len(input_ids), device=device)
        self.at = {p: t.to(device) for p, t in positions.items()}
        n = len(self.blocks)
        self.found = {(hook, p): [None] * n for hook, ps in self.sites.items() for p in ps}
        self._inputs = {p: [None] * n for p in self.sites.get("resid_mid", ())}
        self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return {key: torch.stack(found) for key, found in self.found.items()}


class Patch:
    """Hooks on one block that, during the next forward pass only, set `hook` at one position of each
    row to `edit(h)` (h: float32 (rows, hidden), the model's own vector there; the result the new one).
    The position is counted from the end of the row (`from_end`: 0 is the last token), which is the
    same token whatever the left padding of a generation batch.

        with Patch(model, layer, "mlp_out") as patch:
            patch.set(lambda h: vectors, from_end)   # before each generate call
    Its hooks run before any other on the same modules (a Capture sees the patched vector)."""

    def __init__(self, model: PreTrainedModel, layer: int, hook: str):
        if hook not in HOOKS:
            raise FactrecallError(f"unknown hook {hook!r}: hooks are {', '.join(HOOKS)}")
        self.family, self.hook = family(model), hook
        self.block = decoder_blocks(model)[layer]
        self.edit: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.from_end: torch.Tensor | None = None
        self._x: torch.Tensor | None = None
        self._handles: list = []

    def set(self, edit: Callable[[torch.Tensor], torch.Tensor], from_end: torch.Tensor | None = None) -> None:
        """Patch the next pass: `edit` at `from_end` tokens before each row's last (default: the last)."""
        self.edit, self.from_end = edit, from_end

    def __enter__(self) -> Patch:
        fam, block = self.family, self.block
        register = {
            "resid_pre": lambda: block.register_forward_pre_hook(self._on_input, with_kwargs=True, prepend=True),
            "resid_mid": lambda: [
                block.register_forward_pre_hook(self._remember_input, with_kwargs=True, prepend=True),
                getattr(block, fam.attention).register_forward_hook(self._on_attention, prepend=True),
            ],
            "resid_post": lambda: block.register_forward_hook(self._on_output, prepend=True),
            "attn_out": lambda: getattr(block, fam.attention).register_forward_hook(self._on_output, prepend=True),
            "mlp_out": lambda: getattr(block, fam.mlp).register_forward_hook(self._on_output, prepend=True),
        }[self.hook]()
        self._handles = register if isinstance(register, list) else [register]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _where(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(t.shape[0], device=t.device)
        back = torch.zeros(t.shape[0], dtype=torch.long) if self.from_end is None else self.from_end
        return rows, t.shape[1] - 1 - back.to(t.device)

    def _take(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The edit, once: the prompt's pass only; the decoded tokens' passes run as they are."""
        edit, self.edit = self.edit, None
        return edit

    def _replace(self, t: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        rows, cols = self._where(t)
        new = make(t[rows, cols].float())
        t = t.clone()
        t[rows, cols] = new.to(device=t.device, dtype=t.dtype)
        return t

    def _on_input(self, module, args, kwargs):
        edit = self._take()
        if edit is None:
            return None
        x = self._replace(_block_input(args, kwargs), edit)
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    def _on_output(self, module, args, output):
        edit = self._take()
        if edit is None:
            return None
        return _with_first(output, self._replace(_first(output), edit))

    def _remember_input(self, module, args, kwargs):
        if self.edit is not None:
            x = _block_input(args, kwargs)
            rows, cols = self._where(x)
            self._x = x[rows, cols].float()

    def _on_attention(self, module, args, output):
        if self.edit is None or self._x is None:
            return None
        edit, x, self._x = self._take(), self._x, None
        # attn_out := new - x, so that x + attn_out (resid_mid, what the MLP reads) is new
        return _with_first(output, self._replace(_first(output), lambda attn: edit(x + attn).to(attn.device) - x))
