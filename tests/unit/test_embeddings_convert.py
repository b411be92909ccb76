"""The safetensors-to-GGUF converter, checked by reading its output back with gguf's reader."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, TokenType
from safetensors import safe_open

from enclave.embeddings.convert import (
    CONVERTER_VERSION,
    MAX_SEQ_LENGTH_KEY,
    convert_folder,
    expected_tensor_count,
    gguf_tensor_name,
    wordpiece_to_gguf,
)
from enclave.embeddings.hf_folder import SentenceBertFolder, read_folder
from enclave.embeddings.source import fingerprint, prepare_gguf, resolve_source
from enclave.errors import ModelLoadError
from tests.unit.test_embeddings_folder import copy_model_folder


@pytest.fixture(scope="module")
def minilm() -> SentenceBertFolder:
    source = resolve_source(None)
    assert source.folder is not None
    return source.folder


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory, minilm: SentenceBertFolder) -> GGUFReader:
    path = tmp_path_factory.mktemp("convert") / "minilm.gguf"
    convert_folder(minilm, path, "f32")
    return GGUFReader(path)


def field(reader: GGUFReader, key: str) -> Any:
    return reader.fields[key].contents()


def tensor(reader: GGUFReader, name: str) -> Any:
    return next(item for item in reader.tensors if item.name == name)


def test_convert_writes_every_tensor(reader: GGUFReader) -> None:
    assert expected_tensor_count(6) == 5 + 6 * 16
    assert len(reader.tensors) == expected_tensor_count(6)
    assert len({item.name for item in reader.tensors}) == len(reader.tensors)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("general.architecture", "bert"),
        ("general.name", "model"),
        ("bert.context_length", 512),
        ("bert.embedding_length", 384),
        ("bert.feed_forward_length", 1536),
        ("bert.block_count", 6),
        ("bert.attention.head_count", 12),
        ("bert.attention.causal", False),
        ("bert.pooling_type", 1),
        (MAX_SEQ_LENGTH_KEY, 256),
        ("tokenizer.ggml.model", "bert"),
        ("tokenizer.ggml.token_type_count", 2),
        ("tokenizer.ggml.bos_token_id", 101),
        ("tokenizer.ggml.seperator_token_id", 102),
        ("tokenizer.ggml.unknown_token_id", 100),
        ("tokenizer.ggml.padding_token_id", 0),
        ("tokenizer.ggml.mask_token_id", 103),
    ],
)
def test_convert_metadata_round_trip(reader: GGUFReader, key: str, expected: Any) -> None:
    assert field(reader, key) == expected


def test_convert_layer_norm_epsilon(reader: GGUFReader) -> None:
    assert field(reader, "bert.attention.layer_norm_epsilon") == pytest.approx(1e-12)


def test_convert_vocabulary_marks_word_starts(reader: GGUFReader,
                                              minilm: SentenceBertFolder) -> None:
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    ing = minilm.vocab.index("##ing")
    the = minilm.vocab.index("the")

    assert len(tokens) == len(minilm.vocab)
    assert tokens[101] == "[CLS]"
    assert tokens[the] == "\u2581the"
    assert tokens[ing] == "ing"
    assert types[101] == TokenType.CONTROL
    assert types[100] == TokenType.UNKNOWN
    assert types[the] == TokenType.NORMAL


def test_convert_tensor_values_round_trip(reader: GGUFReader,
                                          minilm: SentenceBertFolder) -> None:
    with safe_open(minilm.weights, framework="np") as weights:
        for hf_name, gguf_name in [
            ("embeddings.word_embeddings.weight", "token_embd.weight"),
            ("encoder.layer.0.attention.self.query.weight", "blk.0.attn_q.weight"),
            ("encoder.layer.5.output.LayerNorm.bias", "blk.5.layer_output_norm.bias"),
        ]:
            expected = weights.get_tensor(hf_name)
            stored = tensor(reader, gguf_name)
            assert stored.tensor_type == GGMLQuantizationType.F32
            np.testing.assert_array_equal(np.asarray(stored.data).reshape(expected.shape),
                                          expected)


def test_convert_f16_keeps_added_embeddings_f32(tmp_path: Path,
                                                minilm: SentenceBertFolder) -> None:
    # llama.cpp adds position and token-type embeddings to F32 activations and has no
    # F32 + F16 addition on CPU, so those stay F32 in an F16 file.
    path = tmp_path / "minilm-f16.gguf"
    convert_folder(minilm, path, "f16")
    types = {item.name: item.tensor_type for item in GGUFReader(path).tensors}

    assert types["token_embd.weight"] == GGMLQuantizationType.F16
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.F16
    assert types["blk.0.attn_q.bias"] == GGMLQuantizationType.F32
    assert types["position_embd.weight"] == GGMLQuantizationType.F32
    assert types["token_types.weight"] == GGMLQuantizationType.F32


def test_convert_reads_bfloat16_weights(tmp_path: Path, minilm: SentenceBertFolder) -> None:
    folder = copy_model_folder(tmp_path / "bf16")
    (folder / "model.safetensors").unlink()
    write_bfloat16_copy(minilm.weights, folder / "model.safetensors")
    path = tmp_path / "bf16.gguf"

    convert_folder(read_folder(folder), path, "f32")

    stored = np.asarray(tensor(GGUFReader(path), "blk.0.attn_q.weight").data)
    with safe_open(minilm.weights, framework="np") as weights:
        original = weights.get_tensor("encoder.layer.0.attention.self.query.weight")
    # BF16 keeps 8 significant bits, so values agree to about 1 part in 256.
    np.testing.assert_allclose(stored.reshape(original.shape), original, rtol=1e-2, atol=1e-3)
    assert not np.array_equal(stored.reshape(original.shape), original)


def write_bfloat16_copy(source: Path, target: Path) -> None:
    """Write every tensor of a float32 safetensors file as BF16 (truncated float32 bits)."""
    header: dict[str, Any] = {}
    chunks = []
    offset = 0
    with safe_open(source, framework="np") as weights:
        for name in sorted(weights.keys()):
            array = weights.get_tensor(name)
            if array.dtype == np.float32:
                data = (array.view(np.uint32) >> 16).astype("<u2").tobytes()
                dtype = "BF16"
            else:
                data = array.tobytes()
                dtype = "I64"
            header[name] = {"dtype": dtype, "shape": list(array.shape),
                            "data_offsets": [offset, offset + len(data)]}
            chunks.append(data)
            offset += len(data)
    encoded = json.dumps(header).encode()
    with target.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for chunk in chunks:
            handle.write(chunk)


@pytest.mark.parametrize(
    ("hf_name", "expected"),
    [
        ("embeddings.word_embeddings.weight", "token_embd.weight"),
        ("bert.embeddings.LayerNorm.gamma", "token_embd_norm.weight"),
        ("encoder.layer.3.attention.self.key.bias", "blk.3.attn_k.bias"),
        ("encoder.layer.11.attention.output.dense.weight", "blk.11.attn_output.weight"),
        ("encoder.layer.0.attention.output.LayerNorm.beta", "blk.0.attn_output_norm.bias"),
        ("encoder.layer.2.intermediate.dense.weight", "blk.2.ffn_up.weight"),
        ("encoder.layer.2.output.dense.bias", "blk.2.ffn_down.bias"),
        ("embeddings.position_ids", None),
        ("pooler.dense.weight", None),
        ("cls.predictions.bias", None),
    ],
)
def test_gguf_tensor_name(hf_name: str, expected: str | None) -> None:
    assert gguf_tensor_name(hf_name) == expected


def test_gguf_tensor_name_rejects_unknown() -> None:
    with pytest.raises(ModelLoadError, match="encoder.layer.0.adapter.weight"):
        gguf_tensor_name("encoder.layer.0.adapter.weight")


@pytest.mark.parametrize(
    ("token", "expected"),
    [("[CLS]", "[CLS]"), ("[unused5]", "[unused5]"), ("##ing", "ing"), ("the", "\u2581the"),
     ("#", "\u2581#"), ("北", "\u2581北")],
)
def test_wordpiece_to_gguf(token: str, expected: str) -> None:
    assert wordpiece_to_gguf(token) == expected


def test_prepare_gguf_converts_once(tmp_path: Path) -> None:
    source = resolve_source(str(copy_model_folder(tmp_path / "model")))
    cache = tmp_path / "cache"

    first = prepare_gguf(source, cache)
    written = first.stat().st_mtime_ns
    second = prepare_gguf(source, cache)

    assert second == first
    assert second.stat().st_mtime_ns == written
    assert first.name.startswith("model-")
    assert list(cache.iterdir()) == [first]


def test_prepare_gguf_replaces_outdated_conversion(tmp_path: Path) -> None:
    folder = copy_model_folder(tmp_path / "model")
    cache = tmp_path / "cache"
    first = prepare_gguf(resolve_source(str(folder)), cache)

    # A changed source file changes the fingerprint, so the model is converted again.
    config = folder / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    source = resolve_source(str(folder))
    assert source.folder is not None
    second = prepare_gguf(source, cache)

    assert second != first
    assert fingerprint(source.folder) in second.name
    assert list(cache.iterdir()) == [second]


def test_fingerprint_includes_converter_version(minilm: SentenceBertFolder,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint(minilm)
    monkeypatch.setattr("enclave.embeddings.source.CONVERTER_VERSION", CONVERTER_VERSION + 1)

    assert fingerprint(minilm) != before


def test_prepare_gguf_reports_unwritable_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    source = resolve_source(str(copy_model_folder(tmp_path / "model")))

    with pytest.raises(ModelLoadError, match="data_dir writable"):
        prepare_gguf(source, blocker / "embeddings")

