"""Tensor names of Llama-architecture checkpoints in Hugging Face and in GGUF, and the RoPE
row order that differs between them.

Hugging Face Llama checkpoints order the rows of each query and key head for the
"rotate half" form of rotary embeddings: the first half of the head's dimensions pairs with
the second half. llama.cpp's llama architecture rotates adjacent pairs (0, 1), (2, 3), ...
instead, so converting reorders each head's rows; ``to_gguf_rope_order`` and
``to_hf_rope_order`` are inverse permutations.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# Per-layer tensors: Hugging Face suffix after "model.layers.N." -> GGUF suffix after "blk.N.".
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
# Buffers some checkpoints carry that are recomputed at load time.
IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)

_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")
_GGUF_TO_HF_LAYER = {gguf: hf for hf, gguf in LAYER_TENSORS.items()}
_GGUF_TO_HF_GLOBAL = {gguf: hf for hf, gguf in GLOBAL_TENSORS.items()}


def gguf_name(hf_name: str) -> str | None:
    """Return the GGUF name of a Hugging Face tensor, or None if the tensor is not mapped."""
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    match = _HF_LAYER.match(hf_name)
    if match and match.group(2) in LAYER_TENSORS:
        return f"blk.{match.group(1)}.{LAYER_TENSORS[match.group(2)]}"
    return None


def hf_name(gguf: str) -> str | None:
    """Return the Hugging Face name of a GGUF tensor, or None if the tensor is not mapped."""
    if gguf in _GGUF_TO_HF_GLOBAL:
        return _GGUF_TO_HF_GLOBAL[gguf]
    match = _GGUF_LAYER.match(gguf)
    if match and match.group(2) in _GGUF_TO_HF_LAYER:
        return f"model.layers.{match.group(1)}.{_GGUF_TO_HF_LAYER[match.group(2)]}"
    return None


def to_gguf_rope_order(weight: np.ndarray[Any, Any], n_heads: int) -> np.ndarray[Any, Any]:
    """Reorder the rows of a q_proj/k_proj weight from Hugging Face to GGUF order.

    Within each head, output row ``j`` of the first half and row ``j`` of the second half
    become rows ``2j`` and ``2j + 1``.
    """
    rows, columns = weight.shape[0], weight.shape[-1] if weight.ndim > 1 else 1
    head_dim = rows // n_heads
    shaped = weight.reshape(n_heads, 2, head_dim // 2, columns)
    return shaped.swapaxes(1, 2).reshape(weight.shape)


def to_hf_rope_order(weight: np.ndarray[Any, Any], n_heads: int) -> np.ndarray[Any, Any]:
    """Reorder the rows of a GGUF attn_q/attn_k weight back to Hugging Face order."""
    rows, columns = weight.shape[0], weight.shape[-1] if weight.ndim > 1 else 1
    head_dim = rows // n_heads
    shaped = weight.reshape(n_heads, head_dim // 2, 2, columns)
    return shaped.swapaxes(1, 2).reshape(weight.shape)
