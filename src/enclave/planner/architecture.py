"""The shape of a transformer model, as far as memory and bandwidth depend on it.

An ``Architecture`` comes from a GGUF file's metadata, a Hugging Face ``config.json`` or the
catalogue. ``tensor_layout`` then lists the weight tensors a GGUF conversion of it contains,
with llama.cpp's tensor names and shapes, so that every source goes through the same
per-tensor arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from enclave.i18n import _
from enclave.models.gguf_reader import GgufSummary, TensorInfo
from enclave.planner.errors import PlannerError


@dataclass(frozen=True, slots=True)
class Architecture:
    """Hyperparameters that decide weight, KV-cache and compute-buffer sizes.

    ``family`` is llama.cpp's architecture name (llama, qwen2, deepseek2, ...). The MLA
    fields (``kv_lora_rank`` and the ``qk_*`` sizes) are zero for ordinary attention.
    """

    name: str
    family: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    context_length: int
    tied_embeddings: bool = False
    attention_bias: bool = False
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_ff_expert: int = 0
    n_dense_layers: int = 0
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_dim: int = 0
    qk_nope_dim: int = 0
    source: str = ""

    @property
    def uses_mla(self) -> bool:
        """Return whether attention caches one compressed latent (DeepSeek's MLA)."""
        return self.kv_lora_rank > 0

    @property
    def n_gqa(self) -> int:
        """Return how many query heads share one KV head (1 for multi-head attention)."""
        return self.n_head // max(1, self.n_head_kv)

    @property
    def kv_k_width(self) -> int:
        """Return the K-cache elements per token and layer.

        With MLA, llama.cpp caches the compressed latent plus the RoPE part of the key
        (kv_lora_rank + qk_rope_dim, 576 for DeepSeek-V3) as a single head.
        """
        if self.uses_mla:
            return self.kv_lora_rank + self.qk_rope_dim
        return self.n_head_kv * self.head_dim_k

    @property
    def kv_v_width(self) -> int:
        """Return the V-cache elements per token and layer.

        NOTE: llama.cpp (src/llama-kv-cache.cpp, 2025) still allocates a V cache of
        kv_lora_rank elements for MLA models although attention reads V from the latent;
        forks that drop it (ik_llama.cpp) need only the K part.
        """
        if self.uses_mla:
            return self.kv_lora_rank
        return self.n_head_kv * self.head_dim_v


def tensor_layout(arch: Architecture) -> list[TensorInfo]:
    """List the tensors of a GGUF conversion of ``arch``: names and shapes, weights as BF16.

    One-dimensional tensors (norms, biases) are listed as F32, as GGUF converters write them.
    """
    tensors: list[TensorInfo] = []

    def add(name: str, *shape: int) -> None:
        count = 1
        for dim in shape:
            count *= dim
        kind = "F32" if len(shape) == 1 else "BF16"
        tensors.append(TensorInfo(name, kind, shape, count, count * (4 if kind == "F32" else 2)))

    add("token_embd.weight", arch.n_embd, arch.n_vocab)
    add("output_norm.weight", arch.n_embd)
    if not arch.tied_embeddings:
        add("output.weight", arch.n_embd, arch.n_vocab)

    for layer in range(arch.n_layer):
        prefix = f"blk.{layer}."
        add(prefix + "attn_norm.weight", arch.n_embd)
        add(prefix + "ffn_norm.weight", arch.n_embd)
        if arch.uses_mla:
            _add_mla_attention(arch, prefix, add)
        else:
            _add_attention(arch, prefix, add)
        if arch.n_expert and layer >= arch.n_dense_layers:
            _add_experts(arch, prefix, add)
        else:
            add(prefix + "ffn_gate.weight", arch.n_embd, arch.n_ff)
            add(prefix + "ffn_up.weight", arch.n_embd, arch.n_ff)
            add(prefix + "ffn_down.weight", arch.n_ff, arch.n_embd)
    return tensors


def _add_attention(arch: Architecture, prefix: str, add: Any) -> None:
    q_width = arch.n_head * arch.head_dim_k
    k_width = arch.n_head_kv * arch.head_dim_k
    v_width = arch.n_head_kv * arch.head_dim_v
    add(prefix + "attn_q.weight", arch.n_embd, q_width)
    add(prefix + "attn_k.weight", arch.n_embd, k_width)
    add(prefix + "attn_v.weight", arch.n_embd, v_width)
    add(prefix + "attn_output.weight", arch.n_head * arch.head_dim_v, arch.n_embd)
    if arch.attention_bias:
        add(prefix + "attn_q.bias", q_width)
        add(prefix + "attn_k.bias", k_width)
        add(prefix + "attn_v.bias", v_width)


def _add_mla_attention(arch: Architecture, prefix: str, add: Any) -> None:
    # Names as llama.cpp's deepseek2 architecture; the key/value up-projection is listed as
    # the single attn_kv_b tensor (newer conversions split it into attn_k_b and attn_v_b of
    # the same total size).
    q_head = arch.qk_nope_dim + arch.qk_rope_dim
    if arch.q_lora_rank:
        add(prefix + "attn_q_a_norm.weight", arch.q_lora_rank)
        add(prefix + "attn_q_a.weight", arch.n_embd, arch.q_lora_rank)
        add(prefix + "attn_q_b.weight", arch.q_lora_rank, arch.n_head * q_head)
    else:
        add(prefix + "attn_q.weight", arch.n_embd, arch.n_head * q_head)
    add(prefix + "attn_kv_a_norm.weight", arch.kv_lora_rank)
    add(prefix + "attn_kv_a_mqa.weight", arch.n_embd, arch.kv_lora_rank + arch.qk_rope_dim)
    add(prefix + "attn_kv_b.weight", arch.kv_lora_rank,
        arch.n_head * (arch.qk_nope_dim + arch.head_dim_v))
    add(prefix + "attn_output.weight", arch.n_head * arch.head_dim_v, arch.n_embd)


def _add_experts(arch: Architecture, prefix: str, add: Any) -> None:
    add(prefix + "ffn_gate_inp.weight", arch.n_embd, arch.n_expert)
    add(prefix + "ffn_gate_exps.weight", arch.n_embd, arch.n_ff_expert, arch.n_expert)
    add(prefix + "ffn_up_exps.weight", arch.n_embd, arch.n_ff_expert, arch.n_expert)
    add(prefix + "ffn_down_exps.weight", arch.n_ff_expert, arch.n_embd, arch.n_expert)
    if arch.n_expert_shared:
        shared = arch.n_ff_expert * arch.n_expert_shared
        add(prefix + "ffn_gate_shexp.weight", arch.n_embd, shared)
        add(prefix + "ffn_up_shexp.weight", arch.n_embd, shared)
        add(prefix + "ffn_down_shexp.weight", shared, arch.n_embd)


def _first(value: Any) -> int:
    """Return a per-layer metadata value as one number (the maximum over layers)."""
    if isinstance(value, list):
        return int(max(value)) if value else 0
    return int(value)


def from_gguf(summary: GgufSummary) -> Architecture:
    """Read the architecture from a GGUF file's metadata and tensor table."""
    family = summary.architecture

    def value(key: str, default: Any = None) -> Any:
        return summary.arch_value(key, default)

    n_layer = value("block_count")
    n_embd = value("embedding_length")
    n_head = value("attention.head_count")
    if n_layer is None or n_embd is None or n_head is None:
        raise PlannerError(_(
            "{path} lacks {family}.block_count, .embedding_length or .attention.head_count; "
            "it is not a transformer model the planner knows.", path=summary.path, family=family,
        ))
    n_head = _first(n_head)
    n_head_kv = _first(value("attention.head_count_kv", n_head))
    head_dim_k = int(value("attention.key_length", int(n_embd) // n_head))
    head_dim_v = int(value("attention.value_length", head_dim_k))
    n_vocab = int(value("vocab_size", summary.array_lengths.get("tokenizer.ggml.tokens", 0)))
    kv_lora_rank = int(value("attention.kv_lora_rank", 0))

    arch = Architecture(
        name=str(summary.metadata.get("general.name") or summary.path.stem),
        family=family,
        n_layer=int(n_layer),
        n_embd=int(n_embd),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_ff=_first(value("feed_forward_length", 0)),
        n_vocab=n_vocab,
        context_length=int(value("context_length", 0)),
        tied_embeddings=summary.tensor("output.weight") is None,
        attention_bias=summary.tensor("blk.0.attn_q.bias") is not None,
        n_expert=int(value("expert_count", 0)),
        n_expert_used=int(value("expert_used_count", 0)),
        n_expert_shared=int(value("expert_shared_count", 0)),
        n_ff_expert=int(value("expert_feed_forward_length", 0)),
        n_dense_layers=int(value("leading_dense_block_count", 0)),
        q_lora_rank=int(value("attention.q_lora_rank", 0)),
        kv_lora_rank=kv_lora_rank,
        qk_rope_dim=int(value("rope.dimension_count", 0)) if kv_lora_rank else 0,
        source=f"GGUF metadata of {summary.path.name}",
    )
    if arch.uses_mla:
        # MLA GGUFs store the per-head sizes of the decompressed attention as *_mla keys.
        head_k = int(value("attention.key_length_mla", 0))
        arch = replace(
            arch,
            head_dim_v=int(value("attention.value_length_mla", arch.head_dim_v)),
            qk_nope_dim=head_k - arch.qk_rope_dim if head_k else arch.qk_nope_dim,
        )
    return arch


# Hugging Face model_type -> llama.cpp architecture name.
_HF_FAMILIES = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "qwen2",
    "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2",
}


def from_hf_config(config: dict[str, Any], name: str) -> Architecture:
    """Read the architecture from a Hugging Face ``config.json``."""
    model_type = str(config.get("model_type", ""))
    family = _HF_FAMILIES.get(model_type)
    if family is None:
        raise PlannerError(_(
            "config.json of {name} has model_type {model_type!r}; the planner reads "
            "{families}. Convert the model to GGUF and plan the file.", name=name,
            model_type=model_type, families=", ".join(sorted(_HF_FAMILIES)),
        ))
    try:
        n_embd = int(config["hidden_size"])
        n_head = int(config["num_attention_heads"])
        n_layer = int(config["num_hidden_layers"])
        n_vocab = int(config["vocab_size"])
    except KeyError as exc:
        raise PlannerError(_("config.json of {name} lacks {key!r}.", name=name,
                             key=exc.args[0])) from None

    is_deepseek = family == "deepseek2"
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    if is_deepseek:
        head_dim = int(config.get("qk_nope_head_dim", 0)) + int(config.get("qk_rope_head_dim", 0))
    n_expert = int(config.get("n_routed_experts") or config.get("num_local_experts") or 0)
    return Architecture(
        name=name,
        family=family,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(config.get("num_key_value_heads") or n_head),
        head_dim_k=head_dim,
        head_dim_v=int(config.get("v_head_dim") or head_dim),
        n_ff=int(config.get("intermediate_size", 0)),
        n_vocab=n_vocab,
        context_length=int(config.get("max_position_embeddings", 0)),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=family == "qwen2" or bool(config.get("attention_bias", False)),
        n_expert=n_expert,
        n_expert_used=int(config.get("num_experts_per_tok") or 0) if n_expert else 0,
        n_expert_shared=int(config.get("n_shared_experts") or 0),
        n_ff_expert=int(config.get("moe_intermediate_size") or config.get("intermediate_size")
                        or 0) if n_expert else 0,
        n_dense_layers=int(config.get("first_k_dense_replace") or 0),
        q_lora_rank=int(config.get("q_lora_rank") or 0) if is_deepseek else 0,
        kv_lora_rank=int(config.get("kv_lora_rank") or 0) if is_deepseek else 0,
        qk_rope_dim=int(config.get("qk_rope_head_dim") or 0) if is_deepseek else 0,
        qk_nope_dim=int(config.get("qk_nope_head_dim") or 0) if is_deepseek else 0,
        source=f"config.json of {name}",
    )
