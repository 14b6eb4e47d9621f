"""resid_mid in every supported family, proven on tiny random checkpoints saved by the test: the
vectors captured from batched, right-padded prompts equal h rebuilt by hand from the block's parts
(block input + attention output) on each prompt alone, and satisfy the block's own equation
out = h + mlp(post-attention norm(.))."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from jobs.errors import FactrecallError
from jobs.run.capture import ResidMid, decoder_blocks
from jobs.run.dump import batches
from jobs.run.model import load_model

V, H, L = 96, 32, 3
LLAMA_LIKE = dict(
    vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=2
)
# family -> (model, attention module, post-attention norm, does the MLP read h (else the block input))
FAMILIES = {
    "llama": (lambda: LlamaForCausalLM(LlamaConfig(**LLAMA_LIKE)), "self_attn", "post_attention_layernorm", True),
    "mistral": (lambda: MistralForCausalLM(MistralConfig(**LLAMA_LIKE)), "self_attn", "post_attention_layernorm", True),
    "qwen2": (lambda: Qwen2ForCausalLM(Qwen2Config(**LLAMA_LIKE)), "self_attn", "post_attention_layernorm", True),
    "gpt2": (lambda: GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=H, n_layer=L, n_head=4)), "attn", "ln_2", True),
    "pythia (parallel residual)": (
        lambda: GPTNeoXForCausalLM(
            GPTNeoXConfig(
                vocab_size=V,
                hidden_size=H,
                num_hidden_layers=L,
                num_attention_heads=4,
                intermediate_size=64,
                use_parallel_residual=True,
            )
        ),
        "attention",
        "post_attention_layernorm",
        False,
    ),
    "gpt-neox (sequential residual)": (
        lambda: GPTNeoXForCausalLM(
            GPTNeoXConfig(
                vocab_size=V,
                hidden_size=H,
                num_hidden_layers=L,
                num_attention_heads=4,
                intermediate_size=64,
                use_parallel_residual=False,
            )
        ),
        "attention",
        "post_attention_layernorm",
        True,
    ),
}


def _by_hand(model, ids: list[int], attention: str, norm: str, mlp_reads_h: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward one prompt alone (no padding, no mask) and rebuild h at its last token for every
    block from the block's input and its attention module's output. Also returns the block
    equation's residual |out - h - mlp(norm(.))|."""
    inputs, attn_out, outputs = {}, {}, {}
    handles = []
    for i, block in enumerate(decoder_blocks(model)):
        handles.append(
            block.register_forward_pre_hook(
                lambda m, a, k, i=i: inputs.__setitem__(i, (a[0] if a else k["hidden_states"])[0, -1]), with_kwargs=True
            )
        )
        handles.append(
            getattr(block, attention).register_forward_hook(lambda m, a, o, i=i: attn_out.__setitem__(i, o[0][0, -1]))
        )
        handles.append(
            block.register_forward_hook(
                lambda m, a, o, i=i: outputs.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0, -1])
            )
        )
    with torch.inference_mode():
        model(torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    blocks = decoder_blocks(model)
    h = torch.stack([inputs[i] + attn_out[i] for i in range(len(blocks))])
    with torch.inference_mode():
        mlp = torch.stack(
            [blocks[i].mlp(getattr(blocks[i], norm)(h[i] if mlp_reads_h else inputs[i])) for i in range(len(blocks))]
        )
    out = torch.stack([outputs[i] for i in range(len(blocks))])
    return h, (out - h - mlp).abs().max()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_captured_resid_mid_equals_h_rebuilt_by_hand(family, tmp_path):
    make, attention, norm, mlp_reads_h = FAMILIES[family]
    torch.manual_seed(0)
    make().save_pretrained(tmp_path / "ckpt")
    model = load_model(tmp_path / "ckpt", torch.device("cpu")).eval()  # as a user's checkpoint comes in
    rng = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(2, V, (int(n),), generator=rng).tolist() for n in torch.randint(3, 20, (13,), generator=rng)
    ]
    got = {}
    with ResidMid(model) as capture:
        for rows, ids, mask, last in batches(prompts, torch.arange(len(prompts)).numpy(), 5, pad=0):
            assert (ids == 0).any()  # right padding is really exercised
            for r, h in zip(rows, capture.run(ids, mask, last).transpose(0, 1)):
                got[int(r)] = h
    for i, ids in enumerate(prompts):
        want, equation = _by_hand(model, ids, attention, norm, mlp_reads_h)
        assert equation < 1e-5  # the rebuilt h is the block's own intermediate, not a look-alike
        assert torch.allclose(got[i], want, atol=1e-5), f"{family}: prompt {i} differs by {(got[i] - want).abs().max()}"
    # ... and h is neither the block's input nor its output (the check above could not pass with those).
    assert (want - _block_io(model, prompts[-1])[0]).abs().max() > 1e-3
    assert (want - _block_io(model, prompts[-1])[1]).abs().max() > 1e-3


def _block_io(model, ids):
    io = {}
    handles = [
        b.register_forward_hook(
            lambda m, a, o, i=i: io.__setitem__(
                i, (a[0][0, -1] if a else None, (o[0] if isinstance(o, tuple) else o)[0, -1])
            ),
        )
        for i, b in enumerate(decoder_blocks(model))
    ]
    with torch.inference_mode():
        model(torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    return torch.stack([io[i][0] for i in sorted(io)]), torch.stack([io[i][1] for i in sorted(io)])


def test_an_unsupported_family_gets_one_clear_line():
    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=1, ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=H
        )
    )
    with pytest.raises(
        FactrecallError, match=r"cannot capture resid_mid in a 'opt' model: supported are gpt2, gpt_neox, llama"
    ):
        ResidMid(model)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_patch_sets_resid_mid_at_the_last_token_to_the_vector_given(family, tmp_path):
    """jobs.run.patch.LastToken in every family: what its edit receives is the captured resid_mid, and
    the vector it returns is then resid_mid there (as capture reads it), with the layers below as they
    were and the layers above changed; only the first pass after an edit is touched."""
    from jobs.run.patch import LastToken

    make = FAMILIES[family][0]
    torch.manual_seed(0)
    make().save_pretrained(tmp_path / "ckpt")
    model = load_model(tmp_path / "ckpt", torch.device("cpu")).eval()
    ids = torch.randint(2, V, (4, 9), generator=torch.Generator().manual_seed(2))
    mask, last = torch.ones_like(ids), torch.full((4,), 8)
    with ResidMid(model) as capture:
        plain = capture.run(ids, mask, last)
    target = torch.randn(4, H, generator=torch.Generator().manual_seed(3)) * 3
    seen = []
    with LastToken(model, 1) as patch, ResidMid(model) as capture:  # the patch's hooks first: capture sees its result
        patch.edit = lambda h: (seen.append(h.clone()), target)[1]
        patched = capture.run(ids, mask, last)
        again = capture.run(ids, mask, last)  # no edit set: the pass runs as it is
    assert torch.allclose(seen[0], plain[1], atol=1e-5)
    assert torch.allclose(patched[1], target, atol=1e-4), (patched[1] - target).abs().max()
    assert torch.allclose(patched[0], plain[0], atol=1e-6)
    assert (patched[2] - plain[2]).abs().max() > 1e-3
    assert torch.allclose(again, plain, atol=1e-6)
