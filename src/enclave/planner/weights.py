"""Weight bytes of a model at a given quantization, and the bytes one decoded token reads."""

from __future__ import annotations

from dataclasses import dataclass

from enclave.models.gguf_reader import GgufSummary, TensorInfo
from enclave.models.quant_types import FileType, file_type_by_id
from enclave.planner.architecture import Architecture
from enclave.planner.mixture import TypedTensor, predict_types


@dataclass(frozen=True, slots=True)
class WeightEstimate:
    """Weight bytes of one quantization of a model.

    ``exact`` is true when the bytes come from a GGUF file's tensor table rather than from
    the mixture rules.
    """

    type_name: str
    total_bytes: int
    embedding_bytes: int
    expert_bytes: int
    n_params: int
    exact: bool

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.total_bytes / max(1, self.n_params)

    def bytes_per_token(self, arch: Architecture) -> int:
        """Return the weight bytes one decoded token reads.

        A token reads one row of the embedding table, not all of it, unless the table is also
        the output matrix; and a mixture-of-experts layer reads only the experts the router
        picks (``n_expert_used`` of ``n_expert``).
        """
        read = self.total_bytes
        if not arch.tied_embeddings:
            read -= self.embedding_bytes
        if arch.n_expert:
            read -= self.expert_bytes * (arch.n_expert - arch.n_expert_used) // arch.n_expert
        return read

    def device_bytes(self, arch: Architecture) -> int:
        """Return the weight bytes on the accelerators when every layer is offloaded.

        llama.cpp keeps the token-embedding table in host memory (looking up rows is cheap
        there); a tied table is also needed as the output matrix, so a copy goes to the device.
        """
        if arch.tied_embeddings:
            return self.total_bytes
        return self.total_bytes - self.embedding_bytes


def _summarise(type_name: str, tensors: list[TypedTensor] | list[TensorInfo],
               exact: bool) -> WeightEstimate:
    return WeightEstimate(
        type_name=type_name,
        total_bytes=sum(tensor.n_bytes for tensor in tensors),
        embedding_bytes=sum(t.n_bytes for t in tensors if t.name == "token_embd.weight"),
        expert_bytes=sum(t.n_bytes for t in tensors if "_exps." in t.name),
        n_params=sum(tensor.n_elements for tensor in tensors),
        exact=exact,
    )


def estimate_weights(tensors: list[TensorInfo], file_type: FileType,
                     arch: Architecture) -> WeightEstimate:
    """Return the weight bytes of ``tensors`` quantized to ``file_type`` by llama.cpp."""
    return _summarise(file_type.name, predict_types(tensors, file_type, arch), exact=False)


def file_weights(summary: GgufSummary) -> WeightEstimate:
    """Return the exact weight bytes of a GGUF file, from its tensor table."""
    known = file_type_by_id(summary.file_type_id) if summary.file_type_id is not None else None
    return _summarise(known.name if known else "GGUF file", summary.tensors, exact=True)
