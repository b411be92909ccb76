"""Write a Hugging Face folder (config.json, model.safetensors, tokenizer) from a Llama GGUF.

The folder loads in transformers as ``LlamaForCausalLM``. ``enclave eval-quant
--torch-int8`` uses it to measure PyTorch's dynamic INT8 quantization on the same weights
as the GGUF reference.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from enclave.models.gguf_reader import open_gguf, summarize
from enclave.quantize.errors import QuantizeError
from enclave.quantize.llama_names import hf_name, to_hf_rope_order
from enclave.quantize.tokenizer_bridge import write_hf_tokenizer

Progress = Callable[[int, int, str], None]

SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


@dataclass(frozen=True, slots=True)
class ExportResult:
    source: Path
    folder: Path
    tensors: int
    seconds: float


def write_safetensors(path: Path, tensors: Iterable[tuple[str, np.ndarray[Any, Any]]],
                      shapes: list[tuple[str, tuple[int, ...], np.dtype[Any]]]) -> None:
    """Write a safetensors file, one tensor at a time.

    ``shapes`` lists every tensor's name, shape and dtype in the order ``tensors`` yields
    them, so the header can be written before the data.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in shapes:
        size = int(np.prod(shape)) * dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for (name, array), (expected, shape, dtype) in zip(tensors, shapes, strict=True):
            if name != expected or array.shape != shape or array.dtype != dtype:
                raise QuantizeError(f"Tensor {name} does not match the safetensors header.")
            handle.write(np.ascontiguousarray(array).tobytes())


def _hf_config(metadata: dict[str, Any], n_vocab: int, tied: bool) -> dict[str, Any]:
    def value(key: str, default: Any = None) -> Any:
        return metadata.get(f"llama.{key}", default)

    n_embd = int(value("embedding_length"))
    n_head = int(value("attention.head_count"))
    head_dim = int(value("attention.key_length", n_embd // n_head))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": n_embd,
        "intermediate_size": int(value("feed_forward_length")),
        "num_hidden_layers": int(value("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(value("attention.head_count_kv", n_head)),
        "head_dim": head_dim,
        "max_position_embeddings": int(value("context_length", 2048)),
        "rms_norm_eps": float(value("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(value("rope.freq_base", 10000.0)),
        "vocab_size": n_vocab,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    for key, config_key in (("bos", "bos_token_id"), ("eos", "eos_token_id")):
        token = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token is not None:
            config[config_key] = int(token)
    return config


def export_hf(source: Path, folder: Path, progress: Progress | None = None) -> ExportResult:
    """Write ``folder`` as a float32 Hugging Face Llama model of the GGUF ``source``."""
    reader = open_gguf(source)
    summary = summarize(reader, source)
    if summary.architecture != "llama":
        raise QuantizeError(f"{source} has architecture {summary.architecture!r}; Enclave "
                            "exports only 'llama' GGUF files to Hugging Face folders.")
    if "llama.rope.scaling.type" in summary.metadata or summary.tensor("rope_freqs.weight"):
        # NOTE: Llama 3.1-style RoPE scaling is not mapped to config.json's rope_scaling yet.
        raise QuantizeError(f"{source} uses RoPE scaling, which the export does not map yet.")

    full_metadata = {key: field.contents() for key, field in reader.fields.items()
                     if key.startswith("tokenizer.")}
    n_head = int(summary.arch_value("attention.head_count"))
    n_head_kv = int(summary.arch_value("attention.head_count_kv", n_head))
    n_vocab = summary.array_lengths.get("tokenizer.ggml.tokens", 0)
    tied = summary.tensor("output.weight") is None

    names: list[tuple[str, Any]] = []
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if name is None:
            raise QuantizeError(f"{source} has tensor {tensor.name}, which a Hugging Face "
                                "Llama model has no place for.")
        names.append((name, tensor))
    shapes = [(name, tuple(int(dim) for dim in reversed(tensor.shape)), np.dtype(np.float32))
              for name, tensor in names]

    def arrays() -> Iterable[tuple[str, np.ndarray[Any, Any]]]:
        for index, (name, tensor) in enumerate(names, start=1):
            shape = tuple(int(dim) for dim in reversed(tensor.shape))
            values = np.asarray(dequantize(tensor.data, GGMLQuantizationType(tensor.tensor_type)),
                                dtype=np.float32).reshape(shape)
            if tensor.name.endswith("attn_q.weight"):
                values = to_hf_rope_order(values, n_head)
            elif tensor.name.endswith("attn_k.weight"):
                values = to_hf_rope_order(values, n_head_kv)
            if progress is not None:
                progress(index, len(names), tensor.name)
            yield name, values

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    config = _hf_config(summary.metadata, n_vocab, tied)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    partial = folder / "model.safetensors.partial"
    try:
        write_safetensors(partial, arrays(), shapes)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, folder / "model.safetensors")
    write_hf_tokenizer(full_metadata, folder, config["max_position_embeddings"])
    return ExportResult(source, folder, len(names), time.perf_counter() - started)
