"""The hook point `resid_mid` (paper section 3.2): in every block, h = residual stream + self-attention
output, before the MLP, at one token position per sequence.

- Llama, Mistral, Qwen2 (`x + attn(norm(x))`, then `mlp(post_attention_layernorm(.))`) and GPT-2
  (the same with `ln_2`): h is the input of the post-attention norm.
- GPT-NeoX / Pythia: with its parallel residual the block computes `x + attn(ln1(x)) + mlp(ln2(x))`
  and no module ever sees `x + attn`; h is the block's input plus its (post-dropout) attention
  output, which is also the post-attention norm's input when `use_parallel_residual` is off.

One forward pass collects every layer at once through hooks; each hook keeps only the chosen
position of each row, so memory is (layers, batch, hidden), not (layers, batch, tokens, hidden).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from jobs.errors import FactrecallError
from jobs.run.checkpoints import SUPPORTED_FAMILIES

# model_type -> (where the decoder blocks live under base_model, how h is read)
FAMILIES: dict[str, tuple[str, str]] = {
    "llama": ("layers", "post_attention_layernorm"),
    "mistral": ("layers", "post_attention_layernorm"),
    "qwen2": ("layers", "post_attention_layernorm"),
    "gpt2": ("h", "ln_2"),
    "gpt_neox": ("layers", "input+post_attention_dropout"),
}


assert set(FAMILIES) == set(SUPPORTED_FAMILIES), "jobs.run.checkpoints.SUPPORTED_FAMILIES lists what capture reads"


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    kind = model.config.model_type
    if kind not in FAMILIES:
        raise FactrecallError(
            f"cannot capture resid_mid in a {kind!r} model: supported are {', '.join(sorted(FAMILIES))} "
            "(Llama-family, GPT-2, GPT-NeoX/Pythia checkpoints)"
        )
    return getattr(model.base_model, FAMILIES[kind][0])


class ResidMid:
    """Hooks that record h at `positions` (one per row) in every block during a forward pass.

    with ResidMid(model) as capture:
        h = capture.run(input_ids, attention_mask, positions)   # (layers, batch, hidden)
    """

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.blocks = decoder_blocks(model)
        self.how = FAMILIES[model.config.model_type][1]
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.rows: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.found: list[torch.Tensor | None] = [None] * len(self.blocks)
        self._inputs: list[torch.Tensor | None] = [None] * len(self.blocks)

    def _pick(self, t: torch.Tensor) -> torch.Tensor:
        return t[self.rows, self.positions]

    def __enter__(self) -> ResidMid:
        for i, block in enumerate(self.blocks):
            if self.how == "input+post_attention_dropout":
                self.handles.append(block.register_forward_pre_hook(self._block_input(i), with_kwargs=True))
                self.handles.append(block.post_attention_dropout.register_forward_hook(self._attention_output(i)))
            else:
                self.handles.append(getattr(block, self.how).register_forward_pre_hook(self._norm_input(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _norm_input(self, i: int):
        def hook(module, args):
            self.found[i] = self._pick(args[0]).float()

        return hook

    def _block_input(self, i: int):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            self._inputs[i] = self._pick(x).float()

        return hook

    def _attention_output(self, i: int):
        def hook(module, args, output):
            self.found[i] = self._inputs[i] + self._pick(output).float()

        return hook

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Forward the base model (no LM head) and return h, float32 (layers, batch, hidden)."""
        if not self.handles:
            raise RuntimeError("use ResidMid as a context manager")
        self.rows = torch.arange(len(input_ids), device=input_ids.device)
        self.positions = positions.to(input_ids.device)
        self.found = [None] * len(self.blocks)
        self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return torch.stack(self.found)
