"""Common open models, by name, so a team can plan before it has downloaded anything.

Every value comes from the model's ``config.json`` on the Hugging Face Hub; the repository is
named in ``source``. Parameter counts follow from these values through ``tensor_layout`` and
are checked against the published sizes in tests/unit/test_planner_arithmetic.py.
"""

from __future__ import annotations

from dataclasses import replace

from enclave.i18n import _
from enclave.planner.architecture import Architecture
from enclave.planner.errors import PlannerError


def _dense(name: str, family: str, source: str, *, layers: int, embd: int, heads: int,
           kv_heads: int, ff: int, vocab: int, context: int, tied: bool = False) -> Architecture:
    head_dim = embd // heads
    return Architecture(
        name=name, family=family, n_layer=layers, n_embd=embd, n_head=heads,
        n_head_kv=kv_heads, head_dim_k=head_dim, head_dim_v=head_dim, n_ff=ff, n_vocab=vocab,
        context_length=context, tied_embeddings=tied, attention_bias=family == "qwen2",
        source=f"config.json of {source}",
    )


_LLAMA_2_7B = _dense("Llama-2-7B", "llama", "meta-llama/Llama-2-7b-hf", layers=32,
                     embd=4096, heads=32, kv_heads=32, ff=11008, vocab=32000, context=4096)
_LLAMA_2_13B = _dense("Llama-2-13B", "llama", "meta-llama/Llama-2-13b-hf", layers=40,
                      embd=5120, heads=40, kv_heads=40, ff=13824, vocab=32000, context=4096)
# The 33B-class models: the original LLaMA 33B (published as "30B", multi-head attention)
# and Code Llama 34B, which shares K/V heads in groups of 8 (GQA).
_LLAMA_33B = _dense("LLaMA-33B", "llama", "huggyllama/llama-30b", layers=60, embd=6656,
                    heads=52, kv_heads=52, ff=17920, vocab=32000, context=2048)
_CODELLAMA_34B = _dense("CodeLlama-34B", "llama", "codellama/CodeLlama-34b-hf", layers=48,
                        embd=8192, heads=64, kv_heads=8, ff=22016, vocab=32000, context=16384)
_LLAMA_3_8B = _dense("Llama-3-8B", "llama", "meta-llama/Meta-Llama-3-8B", layers=32,
                     embd=4096, heads=32, kv_heads=8, ff=14336, vocab=128256, context=8192)
_LLAMA_3_70B = _dense("Llama-3-70B", "llama", "meta-llama/Meta-Llama-3-70B", layers=80,
                      embd=8192, heads=64, kv_heads=8, ff=28672, vocab=128256, context=8192)
_QWEN25_7B = _dense("Qwen2.5-7B", "qwen2", "Qwen/Qwen2.5-7B-Instruct", layers=28, embd=3584,
                    heads=28, kv_heads=4, ff=18944, vocab=152064, context=32768)
_QWEN25_14B = _dense("Qwen2.5-14B", "qwen2", "Qwen/Qwen2.5-14B-Instruct", layers=48,
                     embd=5120, heads=40, kv_heads=8, ff=13824, vocab=152064, context=32768)
_QWEN25_32B = _dense("Qwen2.5-32B", "qwen2", "Qwen/Qwen2.5-32B-Instruct", layers=64,
                     embd=5120, heads=40, kv_heads=8, ff=27648, vocab=152064, context=32768)
_QWEN25_72B = _dense("Qwen2.5-72B", "qwen2", "Qwen/Qwen2.5-72B-Instruct", layers=80,
                     embd=8192, heads=64, kv_heads=8, ff=29568, vocab=152064, context=32768)
# The R1 distillations keep their Qwen2.5 base architectures. The 1.5B one does not tie its
# output matrix to the embeddings, which is why it has 1.78B parameters, not 1.54B.
_R1_QWEN_1_5B = _dense("DeepSeek-R1-Distill-Qwen-1.5B", "qwen2",
                       "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", layers=28, embd=1536,
                       heads=12, kv_heads=2, ff=8960, vocab=151936, context=131072)
_R1_QWEN_7B = _dense("DeepSeek-R1-Distill-Qwen-7B", "qwen2",
                     "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", layers=28, embd=3584, heads=28,
                     kv_heads=4, ff=18944, vocab=152064, context=131072)
_R1_QWEN_14B = _dense("DeepSeek-R1-Distill-Qwen-14B", "qwen2",
                      "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", layers=48, embd=5120,
                      heads=40, kv_heads=8, ff=13824, vocab=152064, context=131072)
_R1_QWEN_32B = _dense("DeepSeek-R1-Distill-Qwen-32B", "qwen2",
                      "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", layers=64, embd=5120,
                      heads=40, kv_heads=8, ff=27648, vocab=152064, context=131072)

# DeepSeek-V3 and R1 share one architecture: 61 layers, the first 3 dense, then 256 routed
# experts (8 used per token) plus 1 shared expert, and multi-head latent attention whose KV
# cache stores a 512-wide latent plus a 64-wide RoPE key per token and layer. The multi-token
# prediction layer of the checkpoint (layer 61) is not counted: llama.cpp does not load it.
_DEEPSEEK_V3 = Architecture(
    name="DeepSeek-V3", family="deepseek2", n_layer=61, n_embd=7168, n_head=128,
    n_head_kv=128, head_dim_k=192, head_dim_v=128, n_ff=18432, n_vocab=129280,
    context_length=163840, n_expert=256, n_expert_used=8, n_expert_shared=1, n_ff_expert=2048,
    n_dense_layers=3, q_lora_rank=1536, kv_lora_rank=512, qk_rope_dim=64, qk_nope_dim=128,
    source="config.json of deepseek-ai/DeepSeek-V3",
)
_DEEPSEEK_R1 = replace(_DEEPSEEK_V3, name="DeepSeek-R1",
                       source="config.json of deepseek-ai/DeepSeek-R1")

# Catalogue keys are lower-case; `enclave plan llama-2-7b` finds Llama-2-7B.
KNOWN_MODELS: dict[str, Architecture] = {
    "llama-2-7b": _LLAMA_2_7B,
    "llama-2-13b": _LLAMA_2_13B,
    "llama-33b": _LLAMA_33B,
    "codellama-34b": _CODELLAMA_34B,
    "llama-3-8b": _LLAMA_3_8B,
    "llama-3-70b": _LLAMA_3_70B,
    "qwen2.5-7b": _QWEN25_7B,
    "qwen2.5-14b": _QWEN25_14B,
    "qwen2.5-32b": _QWEN25_32B,
    "qwen2.5-72b": _QWEN25_72B,
    "deepseek-r1-distill-qwen-1.5b": _R1_QWEN_1_5B,
    "deepseek-r1-distill-qwen-7b": _R1_QWEN_7B,
    "deepseek-r1-distill-qwen-14b": _R1_QWEN_14B,
    "deepseek-r1-distill-qwen-32b": _R1_QWEN_32B,
    "deepseek-v3": _DEEPSEEK_V3,
    "deepseek-r1": _DEEPSEEK_R1,
}


def known_model(name: str) -> Architecture:
    """Return the catalogue entry called ``name`` (case-insensitive)."""
    found = KNOWN_MODELS.get(name.lower())
    if found is None:
        raise PlannerError(_(
            "{name!r} is not a file, a model folder or a known model name. Known names: "
            "{known}.", name=name, known=", ".join(KNOWN_MODELS),
        ))
    return found
