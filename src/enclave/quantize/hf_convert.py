"""Convert a Hugging Face safetensors folder of a Llama-architecture model to GGUF (F32/F16).

The mapping is Enclave's own: tensor names from ``llama_names``, query and key rows put into
llama.cpp's RoPE order, hyperparameters from config.json as ``llama.*`` keys, and the
tokenizer from tokenizer.json through ``tokenizer_bridge``. Tensors are read from the
safetensors files and written one at a time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from enclave.errors import ModelLoadError
from enclave.models.safetensors_reader import HfFolder, SafetensorsEntry, read_hf_folder
from enclave.quantize.convert import FULL_PRECISION, ConvertResult
from enclave.quantize.errors import QuantizeError
from enclave.quantize.llama_names import IGNORED_HF_SUFFIXES, gguf_name, to_gguf_rope_order
from enclave.quantize.tokenizer_bridge import read_hf_tokenizer

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

LLAMA_MODEL_TYPES = ("llama", "mistral")
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16}


def read_tensor(entry: SafetensorsEntry) -> np.ndarray[Any, Any]:
    """Return a safetensors tensor as float32, reading only its byte range."""
    count = entry.n_elements
    with entry.file.open("rb") as handle:
        handle.seek(entry.start)
        raw = handle.read(entry.end - entry.start)
    if entry.dtype == "BF16":
        # BF16 is the upper half of a float32: shift the bits into place.
        values = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif entry.dtype in _NUMPY_DTYPES:
        values = np.frombuffer(raw, dtype=_NUMPY_DTYPES[entry.dtype]).astype(np.float32)
    else:
        raise QuantizeError(f"Tensor {entry.name} has dtype {entry.dtype}; Enclave converts "
                            "F32, F16 and BF16 checkpoints.")
    if values.size != count:
        raise QuantizeError(f"Tensor {entry.name} in {entry.file} is truncated.")
    return values.reshape(entry.shape)


def _llama_metadata(config: dict[str, Any], name: str) -> list[tuple[str, Any, GGUFValueType]]:
    n_embd = int(config["hidden_size"])
    n_head = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    return [
        ("general.name", name, GGUFValueType.STRING),
        ("llama.context_length", int(config.get("max_position_embeddings", 2048)),
         GGUFValueType.UINT32),
        ("llama.embedding_length", n_embd, GGUFValueType.UINT32),
        ("llama.block_count", int(config["num_hidden_layers"]), GGUFValueType.UINT32),
        ("llama.feed_forward_length", int(config["intermediate_size"]), GGUFValueType.UINT32),
        ("llama.attention.head_count", n_head, GGUFValueType.UINT32),
        ("llama.attention.head_count_kv", int(config.get("num_key_value_heads") or n_head),
         GGUFValueType.UINT32),
        ("llama.attention.key_length", head_dim, GGUFValueType.UINT32),
        ("llama.attention.value_length", head_dim, GGUFValueType.UINT32),
        ("llama.rope.dimension_count", head_dim, GGUFValueType.UINT32),
        ("llama.rope.freq_base", float(config.get("rope_theta", 10000.0)),
         GGUFValueType.FLOAT32),
        ("llama.attention.layer_norm_rms_epsilon", float(config.get("rms_norm_eps", 1e-5)),
         GGUFValueType.FLOAT32),
        ("llama.vocab_size", int(config["vocab_size"]), GGUFValueType.UINT32),
    ]


def _check_llama(folder: HfFolder) -> None:
    config = folder.config
    if config.get("model_type") not in LLAMA_MODEL_TYPES:
        raise QuantizeError(f"{folder.path} contains a {config.get('model_type')!r} model; Enclave "
                            "converts Llama-architecture models (llama, mistral) only.")
    if config.get("rope_scaling"):
        # NOTE: Llama 3.1 and YaRN RoPE scaling would need rope_freqs / rope.scaling.* keys.
        raise QuantizeError(f"{folder.path} uses rope_scaling {config['rope_scaling']!r}, which "
                            "the converter does not map yet.")
    if not folder.entries:
        raise QuantizeError(f"{folder.path} has no *.safetensors files.")


def _mapped_entries(folder: HfFolder) -> list[tuple[str, SafetensorsEntry]]:
    mapped = []
    for entry in folder.entries:
        if entry.name.endswith(IGNORED_HF_SUFFIXES):
            continue
        name = gguf_name(entry.name)
        if name is None:
            raise QuantizeError(f"Tensor {entry.name} of {folder.path} has no place in a GGUF "
                                "llama model.")
        mapped.append((name, entry))
    if bool(folder.config.get("tie_word_embeddings")):
        mapped = [(name, entry) for name, entry in mapped if name != "output.weight"]
    return mapped


def convert_hf(source: Path, destination: Path, type_name: str, *,
               tokenizer_pre: str | None = None, progress: Progress | None = None
               ) -> ConvertResult:
    """Write ``destination`` as a ``type_name`` (f32 or f16) GGUF of the folder ``source``."""
    key = type_name.lower()
    if key not in FULL_PRECISION:
        raise QuantizeError(f"--type {type_name!r}: convert writes f32 or f16; quantize the "
                            "result with 'enclave quantize'.")
    dtype, llama_file_type = FULL_PRECISION[key]
    try:
        folder = read_hf_folder(source)
    except ModelLoadError as exc:
        raise QuantizeError(str(exc)) from None
    _check_llama(folder)
    config = folder.config
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    tokenizer = read_hf_tokenizer(source, int(config["vocab_size"]), config, tokenizer_pre)
    mapped = _mapped_entries(folder)

    partial = destination.with_name(destination.name + ".partial")
    started = time.perf_counter()
    writer = GGUFWriter(partial, arch="llama")
    try:
        for key_name, value, value_type in _llama_metadata(config, source.name):
            writer.add_key_value(key_name, value, value_type)
        writer.add_file_type(int(llama_file_type))
        for key_name, value in tokenizer.items():
            writer.add_key_value(key_name, *_gguf_value(value))
        for name, entry in mapped:
            target = np.dtype(np.float32) if len(entry.shape) < 2 else dtype
            writer.add_tensor_info(name, entry.shape, target, entry.n_elements * target.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for index, (name, entry) in enumerate(mapped, start=1):
            values = read_tensor(entry)
            if name.endswith("attn_q.weight"):
                values = to_gguf_rope_order(values, n_head)
            elif name.endswith("attn_k.weight"):
                values = to_gguf_rope_order(values, n_head_kv)
            target = np.dtype(np.float32) if values.ndim < 2 else dtype
            writer.write_tensor_data(values.astype(target, copy=False))
            if progress is not None:
                progress(index, len(mapped), name)
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, destination)
    return ConvertResult(source, destination, key.upper(), len(mapped),
                         destination.stat().st_size, time.perf_counter() - started)


def _gguf_value(value: Any) -> tuple[Any, GGUFValueType] | tuple[Any, GGUFValueType,
                                                                    GGUFValueType]:
    """Return a metadata value with its GGUF type (and element type for arrays)."""
    if isinstance(value, bool):
        return value, GGUFValueType.BOOL
    if isinstance(value, int):
        return value, GGUFValueType.UINT32
    if isinstance(value, str):
        return value, GGUFValueType.STRING
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value, GGUFValueType.ARRAY, GGUFValueType.STRING
    if isinstance(value, list):
        return value, GGUFValueType.ARRAY, GGUFValueType.INT32
    raise QuantizeError(f"Cannot store tokenizer value {value!r} in GGUF metadata.")
