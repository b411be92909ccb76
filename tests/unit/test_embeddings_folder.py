"""Checks of a Hugging Face sentence-embedding folder before conversion, and model selection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from gguf import PoolingType

from enclave.embeddings.hf_folder import read_folder
from enclave.embeddings.source import DEFAULT_MODEL_ID, default_model_folder, resolve_source
from enclave.errors import ConfigError
from enclave.models.embedded import default_chat_model

LARGE_FILES = ("model.safetensors", "vocab.txt", "tokenizer.json")


def copy_model_folder(target: Path, edits: dict[str, Any] | None = None) -> Path:
    """Copy all-MiniLM-L6-v2's folder (large files linked) and apply JSON edits.

    ``edits`` maps a file name to a dict of keys to merge into it, a list that replaces its
    content, or None to delete the file.
    """
    source = default_model_folder()
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*LARGE_FILES))
    for name in LARGE_FILES:
        (target / name).symlink_to(source / name)
    for name, changes in (edits or {}).items():
        path = target / name
        if changes is None:
            path.unlink()
            continue
        if isinstance(changes, dict):
            changes = {**json.loads(path.read_text()), **changes}
        path.write_text(json.dumps(changes))
    return target


def test_default_folder_reads_sentence_transformers_settings() -> None:
    folder = read_folder(default_model_folder())

    assert folder.max_seq_length == 256
    assert folder.pooling == PoolingType.MEAN
    assert folder.special_token_ids == {"cls": 101, "sep": 102, "unk": 100, "pad": 0,
                                        "mask": 103}
    assert len(folder.vocab) == 30522
    assert folder.vocab[2023] == "this"


@pytest.mark.parametrize(
    ("edits", "words"),
    [
        ({"config.json": {"model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"]}},
         ["XLMRobertaModel", "only BERT", ".gguf"]),
        ({"config.json": {"hidden_act": "relu"}}, ["'relu'", "gelu and absolute only"]),
        ({"config.json": {"position_embedding_type": "relative_key"}},
         ["'relative_key'", "gelu and absolute only"]),
        ({"config.json": {"hidden_size": None}}, ["hidden_size"]),
        ({"model.safetensors": None}, ["model.safetensors", "pytorch_model.bin"]),
        ({"tokenizer_config.json": {"do_lower_case": False}}, ["cased", "uncased"]),
        ({"modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "2_Dense",
             "type": "sentence_transformers.models.Dense"},
        ]}, ["sentence_transformers.models.Dense", "Transformer, Pooling and Normalize"]),
        ({"1_Pooling/config.json": {"pooling_mode_mean_tokens": False,
                                    "pooling_mode_max_tokens": True}},
         ["'max'", "mean, cls and lasttoken"]),
        ({"special_tokens_map.json": {}, "tokenizer_config.json": {"cls_token": "<s>"}},
         ["'<s>'", "not in its vocabulary"]),
    ],
    ids=["architecture", "activation", "positions", "hidden-size", "weights", "cased", "dense",
         "max-pooling", "special-token"],
)
def test_read_folder_rejects_unsupported(tmp_path: Path, edits: dict[str, Any],
                                         words: list[str]) -> None:
    folder = copy_model_folder(tmp_path / "model", edits)

    with pytest.raises(ConfigError) as raised:
        read_folder(folder)

    for word in words:
        assert word in str(raised.value)


def test_read_folder_accepts_new_pooling_format(tmp_path: Path) -> None:
    # sentence-transformers 5 and later write one pooling_mode string.
    folder = copy_model_folder(tmp_path / "model", {"1_Pooling/config.json": {
        "pooling_mode_mean_tokens": False, "pooling_mode": "cls"}})

    assert read_folder(folder).pooling == PoolingType.CLS


def test_read_folder_without_sentence_transformers_files(tmp_path: Path) -> None:
    # A plain transformers folder: mean pooling, and the tokenizer's limit of 512 tokens.
    folder = copy_model_folder(tmp_path / "model", {"modules.json": None,
                                                    "sentence_bert_config.json": None})
    shutil.rmtree(folder / "1_Pooling")

    checked = read_folder(folder)

    assert checked.pooling == PoolingType.MEAN
    assert checked.max_seq_length == 512


def test_resolve_source_names_models() -> None:
    assert resolve_source(None).model_id == DEFAULT_MODEL_ID
    gguf_source = resolve_source(str(default_chat_model()))
    assert gguf_source.model_id == "SmolLM2-135M-Instruct.Q4_1"
    assert gguf_source.gguf_path == default_chat_model()


def test_resolve_source_folder_id_is_folder_name(tmp_path: Path) -> None:
    folder = copy_model_folder(tmp_path / "my-minilm")

    source = resolve_source(str(folder))

    assert source.model_id == "my-minilm"
    assert source.folder is not None


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("absent", None, ["'", "absent", "neither a GGUF file nor a folder"]),
        ("model.bin", b"PK\x03\x04", ["not a GGUF file"]),
    ],
)
def test_resolve_source_rejects_bad_path(tmp_path: Path, name: str, content: bytes | None,
                                         words: list[str]) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(ConfigError) as raised:
        resolve_source(str(path))

    for word in words:
        assert word in str(raised.value)
