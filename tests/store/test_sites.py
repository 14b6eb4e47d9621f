"""Every hook of every supported family (jobs.run.sites), proven on tiny random checkpoints saved by
the test: the vectors captured from batched, right-padded prompts, at per-row positions, equal the ones
rebuilt by hand from the block's own modules on each prompt alone (and satisfy the block's equation
out = x + attn + mlp(norm(.))); a patch of each hook sets exactly the vector given there (the layers
below unchanged, the layers above changed), and what the rest of the block sees is that vector."""

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
from jobs.run.dump import batches
from jobs.run.model import load_model
from jobs.run.sites import Capture, Patch, decoder_blocks
from store.names import HOOKS

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


def _parts(model, ids: list[int], at: int, attention: str, norm: str, mlp_reads_h: bool) -> dict[str, torch.Tensor]:
    """Forward one prompt alone (no padding, no mask) and rebuild every hook at token `at` of every block
    from the block's own modules: its input x, its attention module's output a, its output y; the MLP's
    contribution is computed here by calling the block's MLP on its norm (of x + a, or of x with the
    parallel residual), and the block's equation y = x + a + mlp is checked."""
    inputs, attn, outputs = {}, {}, {}
    handles = []
    for i, block in enumerate(decoder_blocks(model)):
        handles.append(
            block.register_forward_pre_hook(
                lambda m, a, k, i=i: inputs.__setitem__(i, (a[0] if a else k["hidden_states"])[0, at]), with_kwargs=True
            )
        )
        handles.append(
            getattr(block, attention).register_forward_hook(
                lambda m, a, o, i=i: attn.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0, at])
            )
        )
        handles.append(
            block.register_forward_hook(
                lambda m, a, o, i=i: outputs.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0, at])
            )
        )
    with torch.inference_mode():
        model(torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    blocks = decoder_blocks(model)
    n = len(blocks)
    x = torch.stack([inputs[i] for i in range(n)])
    a = torch.stack([attn[i] for i in range(n)])
    if attention == "attention":  # GPT-NeoX: the attention module's output, then its (identity) dropout
        a = torch.stack([blocks[i].post_attention_dropout(attn[i]) for i in range(n)])
    mid = x + a
    with torch.inference_mode():
        mlp = torch.stack([blocks[i].mlp(getattr(blocks[i], norm)(mid[i] if mlp_reads_h else x[i])) for i in range(n)])
    y = torch.stack([outputs[i] for i in range(n)])
    assert (y - x - a - mlp).abs().max() < 1e-5  # the parts are the block's own, not look-alikes
    return {"resid_pre": x, "resid_mid": mid, "resid_post": y, "attn_out": a, "mlp_out": mlp}


def _model(family, tmp_path):
    torch.manual_seed(0)
    FAMILIES[family][0]().save_pretrained(tmp_path / "ckpt")
    return load_model(tmp_path / "ckpt", torch.device("cpu")).eval()  # as a user's checkpoint comes in


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_hook_captured_equals_the_block_rebuilt_by_hand(family, tmp_path):
    _, attention, norm, mlp_reads_h = FAMILIES[family]
    model = _model(family, tmp_path)
    rng = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(2, V, (int(n),), generator=rng).tolist() for n in torch.randint(3, 20, (13,), generator=rng)
    ]
    inner = [int(torch.randint(0, len(p) - 1, (1,), generator=rng)) for p in prompts]  # a token before the last
    got = {}
    with Capture(model, {hook: ("last", "subject_last") for hook in HOOKS}) as capture:
        for rows, ids, mask, last in batches(prompts, torch.arange(len(prompts)).numpy(), 5, pad=0):
            assert (ids == 0).any()  # right padding is really exercised
            out = capture.run(ids, mask, {"last": last, "subject_last": torch.tensor([inner[r] for r in rows])})
            assert set(out) == {(hook, p) for hook in HOOKS for p in ("last", "subject_last")}
            for key, h in out.items():
                assert h.shape == (L, len(rows), H) and h.dtype == torch.float32
                for r, vector in zip(rows, h.transpose(0, 1)):
                    got[key, int(r)] = vector
    for i, ids in enumerate(prompts):
        for position, at in (("last", len(ids) - 1), ("subject_last", inner[i])):
            want = _parts(model, ids, at, attention, norm, mlp_reads_h)
            for hook in HOOKS:
                diff = (got[(hook, position), i] - want[hook]).abs().max()
                assert diff < 1e-5, f"{family} {hook}@{position}: prompt {i} differs by {diff}"
    # ... and the five hooks are five different vectors (none passes for another).
    vectors = [got[(hook, "last"), 0] for hook in HOOKS]
    for j in range(len(vectors)):
        for k in range(j + 1, len(vectors)):
            assert (vectors[j] - vectors[k]).abs().max() > 1e-3


def test_an_unsupported_family_gets_one_clear_line():
    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=1, ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=H
        )
    )
    with pytest.raises(
        FactrecallError, match=r"cannot read sites in a 'opt' model: supported are gpt2, gpt_neox, llama"
    ):
        Capture(model, {"resid_mid": ("last",)})
    with pytest.raises(FactrecallError, match=r"^cannot read sites in a 'opt' model"):
        Patch(model, 0, "mlp_out")


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_patch_sets_exactly_the_vector_given_at_its_hook(family, hook, tmp_path):
    """sites.Patch at each hook of each family, on a left-padded batch (as generation feeds it) at a
    position counted from each row's end: what its edit receives is the captured vector there; the
    vector it returns is then that hook's vector (as Capture reads it), the layers below are as they
    were, the layers above changed; for attn_out and mlp_out the block adds exactly the new vector to
    the stream; only the first pass after an edit is touched."""
    model = _model(family, tmp_path)
    gen = torch.Generator().manual_seed(2)
    lengths = [9, 7, 9, 5]
    width = max(lengths)
    ids = torch.zeros(4, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, width - n :] = torch.randint(2, V, (n,), generator=gen)
        mask[r, width - n :] = 1
    back = torch.tensor([0, 2, 4, 1])  # tokens before each row's last
    at = {"last": width - 1 - back}
    everything = {h: ("last",) for h in HOOKS}
    with Capture(model, everything) as capture:
        plain = capture.run(ids, mask, at)
    target = torch.randn(4, H, generator=torch.Generator().manual_seed(3)) * 3
    seen = []
    with Patch(model, 1, hook) as patch, Capture(model, everything) as capture:
        patch.set(lambda h: (seen.append(h.clone()), target)[1], back)
        patched = capture.run(ids, mask, at)
        again = capture.run(ids, mask, at)  # no edit set: the pass runs as it is
    key = (hook, "last")
    assert torch.allclose(seen[0], plain[key][1], atol=1e-5)
    assert torch.allclose(patched[key][1], target, atol=1e-4), (patched[key][1] - target).abs().max()
    for other in HOOKS:
        assert torch.equal(patched[other, "last"][0], plain[other, "last"][0])  # below: untouched
        assert (patched[other, "last"][2] - plain[other, "last"][2]).abs().max() > 1e-3  # above: changed
        assert torch.allclose(again[other, "last"], plain[other, "last"], atol=1e-6)
    if hook == "attn_out":  # what the stream carries on is exactly x + the new vector
        assert torch.allclose(patched["resid_mid", "last"][1], patched["resid_pre", "last"][1] + target, atol=1e-4)
    if hook == "mlp_out":  # y = resid_mid + mlp_out, with the parallel residual too (resid_mid = x + attn)
        assert torch.allclose(patched["resid_post", "last"][1], patched["resid_mid", "last"][1] + target, atol=1e-4)
    # elsewhere in the rows nothing at this layer changed: the patch is at one token per row
    with Capture(model, {hook: ("last",)}) as capture:
        before_pos = {"last": torch.clamp(width - 2 - back, min=0)}
        plain_before = capture.run(ids, mask, before_pos)
    with Patch(model, 1, hook) as patch, Capture(model, {hook: ("last",)}) as capture:
        patch.set(lambda h: target, back)
        patched_before = capture.run(ids, mask, before_pos)
    assert torch.allclose(patched_before[key][1], plain_before[key][1], atol=1e-6)
