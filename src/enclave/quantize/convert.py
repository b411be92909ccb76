"""Write a full-precision (F32 or F16) GGUF file from a quantized one.

Dequantizing does not restore what quantization lost, but it gives the exact weights the
quantized file computes with in a type every tool reads. That is the honest reference for a
model that ships only quantized, such as the embedded SmolLM2 Q4_1: ``enclave eval-quant``
measures other quantizations of those weights against it.

Tensors are dequantized and written one at a time, so memory stays near the size of the
largest tensor rather than of the model.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize

from enclave.models.gguf_reader import open_gguf
from enclave.quantize.errors import QuantizeError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

# Keys the writer sets itself, or that describe the source file's layout.
_SKIPPED_KEYS = ("general.architecture", "general.file_type", "general.alignment")

FULL_PRECISION: dict[str, tuple[np.dtype[Any], LlamaFileType]] = {
    "f32": (np.dtype(np.float32), LlamaFileType.ALL_F32),
    "f16": (np.dtype(np.float16), LlamaFileType.MOSTLY_F16),
}


@dataclass(frozen=True, slots=True)
class ConvertResult:
    source: Path
    destination: Path
    type_name: str
    tensors: int
    output_bytes: int
    seconds: float


def copy_metadata(reader: GGUFReader, writer: GGUFWriter) -> None:
    """Copy every metadata key of ``reader`` except those describing its own layout."""
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in _SKIPPED_KEYS:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        if value_type == GGUFValueType.ARRAY and len(field.types) > 2:
            raise QuantizeError(f"Metadata key {key} is an array of arrays, which Enclave "
                                "cannot copy yet.")
        writer.add_key_value(key, field.contents(), value_type, sub_type)


def _target_dtype(tensor: Any, dtype: np.dtype[Any]) -> np.dtype[Any]:
    # Norms, biases and other 1-D tensors stay F32, as GGUF converters write them.
    return np.dtype(np.float32) if len(tensor.shape) < 2 else dtype


def dequantize_gguf(source: Path, destination: Path, type_name: str,
                    progress: Progress | None = None) -> ConvertResult:
    """Write ``destination`` with every tensor of ``source`` in F32 or F16 (``type_name``)."""
    key = type_name.lower()
    if key not in FULL_PRECISION:
        raise QuantizeError(f"--type {type_name!r}: convert writes f32 or f16; use "
                            "'enclave quantize' for quantized types.")
    if destination.resolve() == source.resolve():
        raise QuantizeError(f"The output {destination} is the source file; choose another path.")
    dtype, llama_file_type = FULL_PRECISION[key]
    reader = open_gguf(source)
    architecture = str(reader.fields["general.architecture"].contents())

    partial = destination.with_name(destination.name + ".partial")
    started = time.perf_counter()
    writer = GGUFWriter(partial, arch=architecture)
    try:
        copy_metadata(reader, writer)
        writer.add_file_type(int(llama_file_type))
        for tensor in reader.tensors:
            shape = tuple(int(dim) for dim in reversed(tensor.shape))
            target = _target_dtype(tensor, dtype)
            count = int(tensor.n_elements)
            writer.add_tensor_info(tensor.name, shape, target, count * target.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for index, tensor in enumerate(reader.tensors, start=1):
            shape = tuple(int(dim) for dim in reversed(tensor.shape))
            values = _dequantized(tensor).reshape(shape)
            writer.write_tensor_data(values.astype(_target_dtype(tensor, dtype), copy=False))
            if progress is not None:
                progress(index, len(reader.tensors), tensor.name)
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, destination)
    return ConvertResult(source, destination, key.upper(), len(reader.tensors),
                         destination.stat().st_size, time.perf_counter() - started)


def _dequantized(tensor: Any) -> np.ndarray[Any, Any]:
    kind = GGMLQuantizationType(tensor.tensor_type)
    try:
        return np.asarray(dequantize(tensor.data, kind), dtype=np.float32)
    except NotImplementedError:
        raise QuantizeError(f"Tensor {tensor.name} has type {kind.name}, which the gguf "
                            "package cannot dequantize.") from None
