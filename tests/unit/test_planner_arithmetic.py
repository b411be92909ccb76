"""The planner's arithmetic on architectures whose numbers can be checked by hand."""

from __future__ import annotations

import math

import pytest

from enclave.models.quant_types import bits_per_weight, file_type, ggml_type
from enclave.planner.architecture import tensor_layout
from enclave.planner.catalogue import KNOWN_MODELS, known_model
from enclave.planner.errors import PlannerError
from enclave.planner.hardware import accelerator
from enclave.planner.machine import Machine
from enclave.planner.memory import (
    Workload,
    compute_buffer_bytes,
    kv_bytes_per_token,
    kv_cache_bytes,
)
from enclave.planner.mixture import predict_types, use_more_bits
from enclave.planner.recommend import recommend
from enclave.planner.service import build_plan, plan_to_dict
from enclave.planner.settings import PlannerSettings
from enclave.planner.weights import estimate_weights

GIB = 1024**3
LLAMA_2_7B = known_model("llama-2-7b")


def weights(name: str, type_name: str) -> int:
    arch = known_model(name)
    return estimate_weights(tensor_layout(arch), file_type(type_name), arch).total_bytes


@pytest.mark.parametrize(("name", "params"), [
    # Parameter counts published with the checkpoints (exact where the model card gives one).
    ("llama-2-7b", 6_738_415_616),
    ("llama-3-8b", 8_030_261_248),
    ("llama-3-70b", 70_553_706_496),
    ("qwen2.5-7b", 7_615_616_512),
    ("deepseek-r1-distill-qwen-1.5b", 1_777_088_000),
])
def test_catalogue_parameter_counts(name: str, params: int) -> None:
    arch = known_model(name)
    assert sum(tensor.n_elements for tensor in tensor_layout(arch)) == params


def test_deepseek_v3_parameter_counts() -> None:
    arch = known_model("deepseek-v3")
    tensors = tensor_layout(arch)
    total = sum(tensor.n_elements for tensor in tensors)
    experts = sum(tensor.n_elements for tensor in tensors if "_exps." in tensor.name)
    embedding = arch.n_embd * arch.n_vocab
    active = total - experts + experts * arch.n_expert_used // arch.n_expert - embedding
    assert total == pytest.approx(671e9, rel=0.001)
    assert active == pytest.approx(37e9, rel=0.03)


def test_f16_weights_two_bytes_each() -> None:
    # Norms stay F32 (4 bytes): 65 vectors of 4096 values.
    norm_values = 65 * 4096
    assert weights("llama-2-7b", "F16") == (6_738_415_616 - norm_values) * 2 + norm_values * 4


def test_bits_per_weight_from_blocks() -> None:
    assert bits_per_weight(ggml_type("Q8_0")) == 8.5  # 32 weights in 34 bytes
    assert bits_per_weight(ggml_type("Q4_0")) == 4.5  # 32 weights in 18 bytes
    assert bits_per_weight(ggml_type("Q4_K")) == 4.5  # 256 weights in 144 bytes
    assert bits_per_weight(ggml_type("Q6_K")) == 6.5625  # 256 weights in 210 bytes
    assert bits_per_weight(ggml_type("Q2_K")) == 2.625  # 256 weights in 84 bytes


def test_q8_0_weights_34_per_32() -> None:
    f16 = weights("llama-2-7b", "F16")
    q8 = weights("llama-2-7b", "Q8_0")
    norm_bytes = 65 * 4096 * 4
    assert q8 - norm_bytes == (f16 - norm_bytes) // 64 * 34


def test_llama2_7b_kv_cache_2_gib() -> None:
    # 2 (K and V) x 32 layers x 4096 tokens x 4096 values x 2 bytes.
    assert kv_cache_bytes(LLAMA_2_7B, Workload(context=4096)) == 2 * 32 * 4096 * 4096 * 2
    assert kv_cache_bytes(LLAMA_2_7B, Workload(context=4096)) == 2 * GIB


def test_gqa_shrinks_kv_cache() -> None:
    llama_3_8b = known_model("llama-3-8b")
    # 8 KV heads of 128 instead of 32 heads: a quarter of Llama-2-7B's cache per token.
    assert kv_bytes_per_token(llama_3_8b, "f16") == 2 * 32 * 8 * 128 * 2
    assert kv_cache_bytes(llama_3_8b, Workload(context=8192)) == 1 * GIB


def test_q8_0_kv_cache_34_per_32() -> None:
    f16 = kv_cache_bytes(LLAMA_2_7B, Workload(context=4096, kv_type="f16"))
    q8 = kv_cache_bytes(LLAMA_2_7B, Workload(context=4096, kv_type="q8_0"))
    assert q8 == f16 // 2 // 32 * 34


def test_kv_cache_scales_with_concurrency() -> None:
    one = kv_cache_bytes(LLAMA_2_7B, Workload(context=2048, concurrency=1))
    eight = kv_cache_bytes(LLAMA_2_7B, Workload(context=2048, concurrency=8))
    assert eight == 8 * one


def test_kv_cells_round_up_to_256() -> None:
    assert Workload(context=1000).kv_cells == 1024
    assert Workload(context=1000, concurrency=3).kv_cells == 3072


def test_deepseek_mla_kv_cache_size() -> None:
    arch = known_model("deepseek-v3")
    # llama.cpp caches a 512-wide latent plus the 64-wide RoPE key (K) and the 512-wide
    # latent again (V) per layer, instead of 128 heads x (192 + 128) values.
    assert kv_bytes_per_token(arch, "f16") == 61 * (576 + 512) * 2
    assert kv_bytes_per_token(arch, "f16") * 30 < 61 * 128 * (192 + 128) * 2


def test_unknown_kv_type_is_rejected() -> None:
    with pytest.raises(PlannerError, match="q5_9"):
        Workload(context=1024, kv_type="q5_9")


def test_compute_buffer_fits_batch_logits() -> None:
    # Vocabulary logits plus two hidden states, for 512 tokens, as float32.
    assert compute_buffer_bytes(known_model("llama-3-8b"), 512, 8192) == (
        512 * 4 * (128256 + 2 * 4096))


def test_compute_buffer_grows_with_mask() -> None:
    small = compute_buffer_bytes(LLAMA_2_7B, 512, 4096)
    large = compute_buffer_bytes(LLAMA_2_7B, 512, 4 * 131072)
    # The F16 mask contains one value per KV cell and batch token.
    assert large - small >= 4 * 131072 * 512 * 2 - small
    assert large > 512 * 1024 * 1024


def test_use_more_bits_layer_choice() -> None:
    chosen = [layer for layer in range(32) if use_more_bits(layer, 32)]
    assert chosen == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_q4_k_m_tensor_types() -> None:
    typed = {tensor.name: tensor.type_name
             for tensor in predict_types(tensor_layout(LLAMA_2_7B), file_type("Q4_K_M"),
                                         LLAMA_2_7B)}
    assert typed["blk.0.attn_v.weight"] == "Q6_K"
    assert typed["blk.4.attn_v.weight"] == "Q4_K"
    assert typed["blk.6.ffn_down.weight"] == "Q6_K"
    assert typed["blk.7.ffn_down.weight"] == "Q4_K"
    assert typed["blk.7.attn_q.weight"] == "Q4_K"
    assert typed["output.weight"] == "Q6_K"
    assert typed["token_embd.weight"] == "Q4_K"
    assert typed["blk.7.attn_norm.weight"] == "F32"


def test_70b_attn_v_gets_q5_k() -> None:
    arch = known_model("llama-3-70b")
    typed = {tensor.name: tensor.type_name
             for tensor in predict_types(tensor_layout(arch), file_type("Q4_K_M"), arch)}
    assert typed["blk.11.attn_v.weight"] == "Q5_K"


def test_two_h100_hold_llama_3_70b_in_f16() -> None:
    arch = known_model("llama-3-70b")
    estimate = estimate_weights(tensor_layout(arch), file_type("F16"), arch)
    h100 = accelerator("h100-80")
    assert h100 is not None
    [recommendation] = recommend(arch, estimate, Workload(context=4096, concurrency=4),
                                 PlannerSettings(), (h100,))
    assert recommendation.fits
    assert recommendation.devices == 2
    assert recommendation.split == "tensor"


def test_roofline_decode_rate_of_one_sequence() -> None:
    estimate = estimate_weights(tensor_layout(LLAMA_2_7B), file_type("F16"), LLAMA_2_7B)
    h100 = accelerator("h100-80")
    assert h100 is not None
    settings = PlannerSettings(bandwidth_efficiency=0.5)
    [recommendation] = recommend(LLAMA_2_7B, estimate, Workload(context=4096), settings,
                                 (h100,))
    # A token reads every weight but the embedding table, and the sequence's whole KV cache.
    read = estimate.total_bytes - estimate.embedding_bytes + 2 * GIB
    assert recommendation.decode_tokens_s == pytest.approx(0.5 * 3350e9 / read)


def test_batching_shares_one_weight_read() -> None:
    estimate = estimate_weights(tensor_layout(LLAMA_2_7B), file_type("Q4_K_M"), LLAMA_2_7B)
    h100 = accelerator("h100-80")
    assert h100 is not None
    [single] = recommend(LLAMA_2_7B, estimate, Workload(context=1024, concurrency=1),
                         PlannerSettings(), (h100,))
    [batched] = recommend(LLAMA_2_7B, estimate, Workload(context=1024, concurrency=16),
                          PlannerSettings(), (h100,))
    assert batched.aggregate_tokens_s > 5 * single.aggregate_tokens_s


def test_oversized_model_does_not_fit() -> None:
    arch = known_model("deepseek-v3")
    estimate = estimate_weights(tensor_layout(arch), file_type("F16"), arch)
    l4 = accelerator("l4")
    assert l4 is not None
    [recommendation] = recommend(arch, estimate, Workload(context=4096),
                                 PlannerSettings(max_devices=16), (l4,))
    assert not recommendation.fits
    assert recommendation.max_concurrency == 0


def test_unknown_model_lists_names() -> None:
    with pytest.raises(PlannerError, match="llama-3-8b"):
        known_model("llama-9-1t")


def test_plan_json_for_catalogue() -> None:
    machine = Machine(ram_total_bytes=64 * GIB, ram_available_bytes=60 * GIB)
    plan = build_plan("qwen2.5-7b", "q4_k_m", Workload(context=8192, concurrency=2),
                      PlannerSettings(), machine)
    data = plan_to_dict(plan)
    assert data["selected"] == "Q4_K_M"
    assert data["model"]["architecture"]["n_head_kv"] == 4
    assert [row["type"] for row in data["quantizations"]][:3] == ["F32", "F16", "Q8_0"]
    assert data["machine"]["verdict"]["fits"] is True
    assert data["machine"]["verdict"]["device"] == "cpu"
    assert len(data["recommendations"]) > 10
    assert all(math.isfinite(rec["decode_tokens_per_s"]) for rec in data["recommendations"])


def test_plan_rejects_unknown_quantization() -> None:
    machine = Machine(ram_total_bytes=GIB, ram_available_bytes=GIB)
    with pytest.raises(PlannerError, match="Q4_K_M"):
        build_plan("llama-2-7b", "q4_k_x", Workload(context=512), PlannerSettings(), machine)


def test_every_catalogue_model_plans() -> None:
    machine = Machine(ram_total_bytes=GIB, ram_available_bytes=GIB)
    for name in KNOWN_MODELS:
        plan = build_plan(name, None, Workload(context=2048), PlannerSettings(), machine)
        assert plan.selected.weights.type_name == "Q4_K_M"
        assert plan.selected.memory.total > plan.selected.weights.total_bytes
