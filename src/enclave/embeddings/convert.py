"""Convert a BERT sentence-embedding folder into a GGUF file that llama.cpp loads.

The output follows llama.cpp's ``bert`` architecture: its tensor names (``token_embd``,
``blk.N.attn_q`` ...), hyperparameter keys under ``bert.``, and a WordPiece vocabulary under
tokenizer model ``bert``. llama.cpp's WordPiece tokenizer marks the start of a word with
U+2581 instead of marking continuations with ``##``, so the vocabulary is rewritten that way.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from gguf import GGUFWriter, TokenType
from safetensors import safe_open

from enclave.embeddings.hf_folder import SentenceBertFolder
from enclave.errors import ModelLoadError

logger = logging.getLogger(__name__)
# GGUFWriter logs every file it writes at INFO, and this module logs one line per conversion.
logging.getLogger("gguf").setLevel(logging.WARNING)

ARCHITECTURE = "bert"
# Part of the cache key of converted files: raise it whenever the output of this module changes.
CONVERTER_VERSION = 1
# Custom metadata key: the token limit sentence-transformers truncates inputs to. It can be
# lower than bert.context_length (all-MiniLM-L6-v2: 256 against 512 position embeddings).
MAX_SEQ_LENGTH_KEY = "enclave.max_seq_length"
WORD_START = "\u2581"

WeightType = Literal["f32", "f16"]

# Hugging Face BERT tensor names, after the layer prefix, mapped to llama.cpp's names.
_EMBEDDING_TENSORS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
# llama.cpp adds the position and token-type embeddings to F32 activations, and its CPU
# backend has no F32 + F16 addition. So only the token embeddings and the layer matrices may
# be stored in F16, and biases and norms stay F32 as well.
_F16_CAPABLE = ("token_embd.weight",)
# Tensors a sentence embedding does not use: the pooler and the pre-training heads.
_SKIPPED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")
# Some older checkpoints name layer-norm parameters gamma and beta.
_LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


def gguf_tensor_name(hf_name: str) -> str | None:
    """Return llama.cpp's name for a BERT tensor, None for one that is not needed.

    Raise ModelLoadError for a tensor this converter does not know, so that no weight is
    dropped silently.
    """
    name = hf_name.removeprefix("bert.")
    for legacy, modern in _LEGACY_SUFFIXES.items():
        if name.endswith(legacy):
            name = name.removesuffix(legacy) + modern
    if name.startswith(_SKIPPED_PREFIXES):
        return None
    if name in _EMBEDDING_TENSORS:
        return _EMBEDDING_TENSORS[name]

    parts = name.split(".")
    if len(parts) >= 5 and parts[:2] == ["encoder", "layer"] and parts[2].isdigit():
        module, parameter = ".".join(parts[3:-1]), parts[-1]
        if module in _LAYER_TENSORS and parameter in ("weight", "bias"):
            return f"blk.{parts[2]}.{_LAYER_TENSORS[module]}.{parameter}"
    raise ModelLoadError(f"Unexpected tensor {hf_name!r} in a BERT model; it cannot be "
                         "converted. Is this a BERT checkpoint with extra layers?")


def wordpiece_to_gguf(token: str) -> str:
    """Rewrite one vocabulary entry into llama.cpp's WordPiece convention."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return WORD_START + token


def convert_folder(folder: SentenceBertFolder, output: Path, weight_type: WeightType) -> int:
    """Write the GGUF file of a checked folder atomically; return the number of tensors."""
    # The cache lives under the data directory, whose contents are private (0700/0600).
    output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder_path in (output.parent, output.parent.parent):
        if folder_path.name in ("embeddings", "cache"):
            folder_path.chmod(0o700)
    partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
    partial.touch(mode=0o600)
    writer = GGUFWriter(partial, ARCHITECTURE)
    try:
        _add_hyperparameters(writer, folder)
        _add_vocabulary(writer, folder)
        count = 0
        for name, array in _converted_tensors(folder, weight_type):
            writer.add_tensor(name, array)
            count += 1
        _check_tensor_count(folder, count)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, output)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    return count


def expected_tensor_count(block_count: int) -> int:
    """Return the tensors of a converted BERT model: 5 embedding tensors, 16 per layer."""
    return len(_EMBEDDING_TENSORS) + block_count * 2 * len(_LAYER_TENSORS)


def _add_hyperparameters(writer: GGUFWriter, folder: SentenceBertFolder) -> None:
    config = folder.config
    writer.add_name(folder.name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(folder.pooling)
    writer.add_uint32(MAX_SEQ_LENGTH_KEY, folder.max_seq_length)


def _add_vocabulary(writer: GGUFWriter, folder: SentenceBertFolder) -> None:
    special = folder.special_token_ids
    control_ids = set(special.values())
    tokens = [wordpiece_to_gguf(token) for token in folder.vocab]
    types = [TokenType.CONTROL if index in control_ids else TokenType.NORMAL
             for index in range(len(tokens))]
    types[special["unk"]] = TokenType.UNKNOWN

    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(int(folder.config.get("type_vocab_size", 2)))
    writer.add_bos_token_id(special["cls"])
    writer.add_sep_token_id(special["sep"])
    writer.add_unk_token_id(special["unk"])
    writer.add_pad_token_id(special["pad"])
    writer.add_mask_token_id(special["mask"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)


def _converted_tensors(folder: SentenceBertFolder, weight_type: WeightType
                       ) -> Iterator[tuple[str, npt.NDArray[np.generic]]]:
    for hf_name, array in _read_tensors(folder.weights):
        name = gguf_tensor_name(hf_name)
        if name is None:
            continue
        is_matrix = name in _F16_CAPABLE or (name.startswith("blk.") and array.ndim == 2)
        stored_type = np.float16 if weight_type == "f16" and is_matrix else np.float32
        yield name, array.astype(stored_type)


def _read_tensors(path: Path) -> Iterator[tuple[str, npt.NDArray[np.generic]]]:
    """Yield every tensor of a safetensors file as a numpy array, BF16 included."""
    header_length, header = _read_header(path)
    with safe_open(path, framework="np") as handle:
        for name in sorted(handle.keys()):
            if header[name]["dtype"] == "BF16":
                yield name, _read_bfloat16(path, header_length, header[name])
            else:
                yield name, handle.get_tensor(name)


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    # safetensors' numpy API cannot return BF16 tensors, so the header (an 8-byte
    # little-endian length followed by a JSON object) is read here to find them.
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(length))
    return length, header


def _read_bfloat16(path: Path, header_length: int, entry: dict[str, Any]
                   ) -> npt.NDArray[np.float32]:
    start, end = entry["data_offsets"]
    with path.open("rb") as handle:
        handle.seek(8 + header_length + start)
        raw = np.frombuffer(handle.read(end - start), dtype="<u2")
    # A BF16 value is the upper half of the float32 with the same bits.
    widened = raw.astype(np.uint32) << 16
    return widened.view(np.float32).reshape(entry["shape"])


def _check_tensor_count(folder: SentenceBertFolder, count: int) -> None:
    expected = expected_tensor_count(int(folder.config["num_hidden_layers"]))
    if count != expected:
        raise ModelLoadError(f"{folder.weights} has {count} BERT tensors where "
                             f"{expected} were expected; the file is incomplete.")
