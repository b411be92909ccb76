"""Read the metadata and the tensor table of a GGUF file without loading its weights.

The ``gguf`` package memory-maps the file, so reading the header of a 40 GB model costs a
few milliseconds and no resident memory beyond the pages of the header itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gguf import GGUFReader, GGUFValueType

from enclave.errors import ModelLoadError
from enclave.i18n import _

# Metadata arrays longer than this (the vocabulary, the merges) are kept as their length
# only, because planning needs their size, not their 150,000 strings.
_MAX_ARRAY_ITEMS = 64


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One entry of a tensor table.

    ``shape`` is in ggml order: ``shape[0]`` is the row length (the number of columns of a
    weight matrix), as in the GGUF file, the reverse of the PyTorch order.
    """

    name: str
    type_name: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int

    @property
    def row_length(self) -> int:
        return self.shape[0]

    @property
    def n_dims(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class GgufSummary:
    """The header of a GGUF file: metadata, tensor table and layout."""

    path: Path
    file_size: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorInfo]
    data_offset: int
    alignment: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def tensor_bytes(self) -> int:
        """Return the bytes of all tensor data, without alignment padding."""
        return sum(tensor.n_bytes for tensor in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(tensor.n_elements for tensor in self.tensors)

    @property
    def file_type_id(self) -> int | None:
        value = self.metadata.get("general.file_type")
        return int(value) if value is not None else None

    def arch_value(self, key: str, default: Any = None) -> Any:
        """Return ``<architecture>.<key>`` from the metadata, e.g. ``block_count``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def tensor(self, name: str) -> TensorInfo | None:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        return None

    def padded_data_size(self) -> int:
        """Return the size of the data section: every tensor padded to the alignment."""
        total = 0
        for tensor in self.tensors:
            total += -(-tensor.n_bytes // self.alignment) * self.alignment
        return total


def open_gguf(path: Path) -> GGUFReader:
    """Open a GGUF file with the gguf package; raise ModelLoadError if it is not one.

    Opening parses the whole header, vocabulary included: about 2 s for a 49,152-token
    vocabulary, so callers open a file once and pass the reader around.
    """
    if not path.is_file():
        raise ModelLoadError(_("GGUF file {path} not found. Pass the path of an existing file.",
                               path=path))
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelLoadError(_("{path} is not a GGUF file (its first bytes are not 'GGUF').",
                                   path=path))
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(_("Cannot read the GGUF header of {path}: {error}", path=path,
                               error=exc)) from None


def read_gguf(path: Path) -> GgufSummary:
    """Read the header of a GGUF file; raise ModelLoadError if it is not one.

    Summaries are cached by path, size and modification time, so planning and quantizing
    the same file in one process parse its header once.
    """
    if not path.is_file():
        raise ModelLoadError(_("GGUF file {path} not found. Pass the path of an existing file.",
                               path=path))
    status = path.stat()
    return _read_cached(path.resolve(), status.st_size, status.st_mtime_ns, path)


@lru_cache(maxsize=8)
def _read_cached(resolved: Path, size: int, mtime_ns: int, path: Path) -> GgufSummary:
    return summarize(open_gguf(path), path)


def summarize(reader: GGUFReader, path: Path) -> GgufSummary:
    """Return the metadata and tensor table of an open GGUF file."""
    metadata: dict[str, Any] = {}
    array_lengths: dict[str, int] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            array_lengths[key] = len(field.data)
            if len(field.data) > _MAX_ARRAY_ITEMS:
                continue
        metadata[key] = field.contents()

    tensors = [
        TensorInfo(
            name=tensor.name,
            type_name=tensor.tensor_type.name,
            shape=tuple(int(dim) for dim in tensor.shape),
            n_elements=int(tensor.n_elements),
            n_bytes=int(tensor.n_bytes),
        )
        for tensor in reader.tensors
    ]
    return GgufSummary(
        path=path,
        file_size=path.stat().st_size,
        metadata=metadata,
        array_lengths=array_lengths,
        tensors=tensors,
        data_offset=int(reader.data_offset),
        alignment=int(reader.alignment),
    )
