"""ggml tensor types and llama.cpp file types (Q4_K_M, Q8_0, ...).

A ggml type stores a row of weights in blocks: ``block_size`` weights take ``type_size``
bytes, so its bits per weight are ``8 * type_size / block_size``. The block layouts come from
the ``gguf`` package (``GGML_QUANT_SIZES``), which mirrors ggml's ``ggml-common.h``; for
example Q4_K packs 256 weights into 144 bytes (4.5 bits per weight) and Q8_0 packs 32 weights
into 34 bytes (8.5 bits).

A file type such as Q4_K_M is not one tensor type but a recipe: llama.cpp's quantizer gives
most tensors the base type (Q4_K) and some more bits (see ``enclave.planner.mixture``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from enclave.i18n import _


def ggml_type(name: str) -> GGMLQuantizationType:
    """Return the ggml type called ``name`` (case-insensitive), e.g. ``q4_k``."""
    try:
        return GGMLQuantizationType[name.upper()]
    except KeyError:
        raise ValueError(f"unknown ggml type {name!r}") from None


def block_layout(kind: GGMLQuantizationType) -> tuple[int, int]:
    """Return (weights per block, bytes per block) of a ggml type."""
    return GGML_QUANT_SIZES[kind]


def bits_per_weight(kind: GGMLQuantizationType) -> float:
    block_size, type_size = block_layout(kind)
    return 8.0 * type_size / block_size


def row_bytes(kind: GGMLQuantizationType, row_length: int) -> int:
    """Return the bytes of one row of ``row_length`` weights; the row must fill whole blocks."""
    block_size, type_size = block_layout(kind)
    if row_length % block_size:
        raise ValueError(f"a row of {row_length} weights does not fill whole {kind.name} blocks "
                         f"of {block_size}")
    return row_length // block_size * type_size


def tensor_bytes(kind: GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    """Return the bytes of a tensor of ``shape`` (ggml order) stored as ``kind``."""
    rows = 1
    for dim in shape[1:]:
        rows *= dim
    return rows * row_bytes(kind, shape[0])


def is_quantized(kind: GGMLQuantizationType) -> bool:
    """Return whether ``kind`` is a block-quantized type (not F32, F16, BF16 or an integer)."""
    return block_layout(kind)[0] > 1


@dataclass(frozen=True, slots=True)
class FileType:
    """A llama.cpp file type: the value stored as ``general.file_type`` and its base type."""

    name: str
    file_type: LlamaFileType
    base: GGMLQuantizationType

    @property
    def is_quantized(self) -> bool:
        return is_quantized(self.base)


def _file_type(name: str, file_type: LlamaFileType, base: str) -> FileType:
    return FileType(name, file_type, GGMLQuantizationType[base])


# The file types `enclave quantize` and `enclave plan` offer, largest first. The IQ1/IQ2 and
# Q2_K_S types are left out because llama.cpp refuses them without an importance matrix.
FILE_TYPES: dict[str, FileType] = {
    file_type.name: file_type
    for file_type in (
        _file_type("F32", LlamaFileType.ALL_F32, "F32"),
        _file_type("F16", LlamaFileType.MOSTLY_F16, "F16"),
        _file_type("BF16", LlamaFileType.MOSTLY_BF16, "BF16"),
        _file_type("Q8_0", LlamaFileType.MOSTLY_Q8_0, "Q8_0"),
        _file_type("Q6_K", LlamaFileType.MOSTLY_Q6_K, "Q6_K"),
        _file_type("Q5_1", LlamaFileType.MOSTLY_Q5_1, "Q5_1"),
        _file_type("Q5_K_M", LlamaFileType.MOSTLY_Q5_K_M, "Q5_K"),
        _file_type("Q5_K_S", LlamaFileType.MOSTLY_Q5_K_S, "Q5_K"),
        _file_type("Q5_0", LlamaFileType.MOSTLY_Q5_0, "Q5_0"),
        _file_type("Q4_1", LlamaFileType.MOSTLY_Q4_1, "Q4_1"),
        _file_type("Q4_K_M", LlamaFileType.MOSTLY_Q4_K_M, "Q4_K"),
        _file_type("Q4_K_S", LlamaFileType.MOSTLY_Q4_K_S, "Q4_K"),
        _file_type("Q4_0", LlamaFileType.MOSTLY_Q4_0, "Q4_0"),
        _file_type("IQ4_NL", LlamaFileType.MOSTLY_IQ4_NL, "IQ4_NL"),
        _file_type("IQ4_XS", LlamaFileType.MOSTLY_IQ4_XS, "IQ4_XS"),
        _file_type("Q3_K_L", LlamaFileType.MOSTLY_Q3_K_L, "Q3_K"),
        _file_type("Q3_K_M", LlamaFileType.MOSTLY_Q3_K_M, "Q3_K"),
        _file_type("Q3_K_S", LlamaFileType.MOSTLY_Q3_K_S, "Q3_K"),
        _file_type("Q2_K", LlamaFileType.MOSTLY_Q2_K, "Q2_K"),
    )
}


def file_type(name: str) -> FileType:
    """Return the file type called ``name`` (case-insensitive); raise ValueError naming all."""
    found = FILE_TYPES.get(name.upper())
    if found is None:
        raise ValueError(_("unknown quantization type {name!r}; choose one of {types}",
                           name=name, types=", ".join(FILE_TYPES)))
    return found


def file_type_by_id(value: int) -> FileType | None:
    """Return the file type stored as ``general.file_type = value``, if Enclave knows it."""
    for candidate in FILE_TYPES.values():
        if int(candidate.file_type) == value:
            return candidate
    return None
