"""Read a Hugging Face model folder: ``config.json`` and the headers of its safetensors files.

A safetensors file starts with an 8-byte little-endian header length and a JSON header that
maps each tensor name to its dtype, shape and byte range, so the tensor table of a sharded
70B checkpoint is read without touching its weights.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.errors import ModelLoadError
from enclave.i18n import _
from enclave.models.gguf_reader import TensorInfo

# Bytes per element of the safetensors dtypes that model checkpoints use.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}

# A header larger than this is not a safetensors header; the format caps it at 100 MB.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SafetensorsEntry:
    """One tensor of a safetensors file, shape in PyTorch order."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int
    end: int

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class HfFolder:
    """A Hugging Face model folder: its config and the tensors of all its shards."""

    path: Path
    config: dict[str, Any]
    entries: list[SafetensorsEntry]

    @property
    def tensor_bytes(self) -> int:
        return sum(entry.end - entry.start for entry in self.entries)

    @property
    def n_params(self) -> int:
        return sum(entry.n_elements for entry in self.entries)

    def tensor_infos(self) -> list[TensorInfo]:
        """Return the tensors as TensorInfo, shapes reversed into ggml order."""
        return [
            TensorInfo(entry.name, entry.dtype, tuple(reversed(entry.shape)) or (1,),
                       entry.n_elements, entry.end - entry.start)
            for entry in self.entries
        ]


def read_safetensors_header(path: Path) -> tuple[list[SafetensorsEntry], dict[str, str]]:
    """Return the tensors of one safetensors file and its ``__metadata__``."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ModelLoadError(_("{path} is too short to be a safetensors file.", path=path))
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > _MAX_HEADER_BYTES:
            raise ModelLoadError(_("{path} is not a safetensors file (header length {length} "
                                   "bytes).", path=path, length=header_length))
        try:
            header = json.loads(handle.read(header_length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(_("{path} has an unreadable safetensors header: {error}",
                                   path=path, error=exc)) from None

    data_start = 8 + header_length
    metadata = header.pop("__metadata__", None) or {}
    entries = [
        SafetensorsEntry(
            name=name,
            dtype=str(info["dtype"]),
            shape=tuple(int(dim) for dim in info["shape"]),
            file=path,
            start=data_start + int(info["data_offsets"][0]),
            end=data_start + int(info["data_offsets"][1]),
        )
        for name, info in header.items()
    ]
    return entries, metadata


def read_hf_folder(path: Path) -> HfFolder:
    """Read ``config.json`` and every ``*.safetensors`` header of a model folder."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(_("{path} has no config.json; pass a Hugging Face model folder.",
                               path=path))
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(_("{path} is not valid JSON: {error}", path=config_path,
                               error=exc)) from None

    entries: list[SafetensorsEntry] = []
    for shard in sorted(path.glob("*.safetensors")):
        shard_entries, _metadata = read_safetensors_header(shard)
        entries.extend(shard_entries)
    return HfFolder(path=path, config=config, entries=entries)
