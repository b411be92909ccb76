"""Memory of a running model besides its weights: KV cache, compute buffers and overhead.

The formulas follow how llama.cpp (the version bundled with llama-cpp-python 0.3.36)
allocates for a context created the way ``enclave.engine.scheduler`` creates it. That is one
unified KV cache of context x concurrency cells, ``n_batch = n_ubatch = batch_size``, and
flash attention left at llama.cpp's default, which enables it on CPU, CUDA and Metal. The
constants were calibrated with benchmarks/planner.py, and docs/planner.md lists planned
against measured memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T

from enclave.i18n import _
from enclave.models.quant_types import block_layout
from enclave.planner.architecture import Architecture
from enclave.planner.errors import PlannerError

# KV-cache element types llama.cpp accepts for type_k / type_v. Quantized V caches need
# flash attention, which llama.cpp enables by default where the backend supports it.
KV_TYPES = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}

# llama.cpp rounds the number of KV cells up to a multiple of 256.
KV_CELL_PADDING = 256

# Bytes of a float32 logit or activation.
FLOAT_BYTES = 4

# Resident memory llama.cpp needs beyond its buffers: the vocabulary (token strings, scores,
# merges and lookup tables, about 370 bytes per token for SmolLM2's 49,152-token BPE
# vocabulary) and a fixed part (thread pool, graph metadata, allocator state). Both were
# measured as RSS growth with benchmarks/planner.py.
# NOTE: the per-token figure is calibrated on one vocabulary; SentencePiece vocabularies
# without merges may need less.
VOCAB_BYTES_PER_TOKEN = 384
FIXED_RUNTIME_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Workload:
    """A run configuration: sequences, tokens per sequence, batch and KV-cache type.

    ``logits_rows`` is how many rows of logits one decode call returns: one per sequence when
    serving (the default), all ``batch_size`` for perplexity-style evaluation.
    """

    context: int
    concurrency: int = 1
    kv_type: str = "f16"
    batch_size: int = 512
    logits_rows: int | None = None

    def __post_init__(self) -> None:
        if self.kv_type not in KV_TYPES:
            raise PlannerError(_("KV-cache type {kv_type!r} is not one of {types}.",
                                 kv_type=self.kv_type, types=", ".join(KV_TYPES)))
        if self.context < 1 or self.concurrency < 1 or self.batch_size < 1:
            raise PlannerError(_(
                "context, concurrency and batch size must be at least 1; got {context}, "
                "{concurrency} and {batch_size}.", context=self.context,
                concurrency=self.concurrency, batch_size=self.batch_size))

    @property
    def kv_cells(self) -> int:
        cells = self.context * self.concurrency
        return -(-cells // KV_CELL_PADDING) * KV_CELL_PADDING

    @property
    def output_rows(self) -> int:
        return self.logits_rows if self.logits_rows is not None else self.concurrency


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Bytes of each part of a running model."""

    weights: int
    kv_cache: int
    compute: int
    output: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.output + self.runtime


def kv_bytes_per_token(arch: Architecture, kv_type: str) -> int:
    """Return the K and V bytes one token occupies in the cache, over all layers."""
    kind = KV_TYPES[kv_type]
    block_size, type_size = block_layout(kind)
    per_layer = 0
    for width in (arch.kv_k_width, arch.kv_v_width):
        if width % block_size:
            raise PlannerError(_(
                "A KV width of {width} does not fill whole {kv_type} blocks of {block_size}; "
                "use --kv-type f16.", width=width, kv_type=kv_type, block_size=block_size))
        per_layer += width // block_size * type_size
    return per_layer * arch.n_layer


def kv_cache_bytes(arch: Architecture, workload: Workload) -> int:
    """Return the KV-cache bytes: 2 (K and V) x layers x cells x KV width x bytes per value."""
    return kv_bytes_per_token(arch, workload.kv_type) * workload.kv_cells


def compute_buffer_bytes(arch: Architecture, batch_size: int, kv_cells: int) -> int:
    """Return the compute buffer llama.cpp reserves for a batch of ``batch_size`` tokens.

    The buffer is sized for the worst graph: a full batch that returns logits for every
    token, attending to every KV cell. Its peak is the larger of

    * the output: logits (vocabulary x batch floats) next to two hidden states;
    * attention: the F16 mask of KV cells x batch, plus twelve hidden-state-sized float
      buffers per token (calibrated with benchmarks/planner.py, where the mask phase takes
      over above about 64k cells);
    * the feed-forward block: two intermediate activations plus two hidden states.

    NOTE: assumes flash attention. Without it, llama.cpp also materialises the attention
    scores, heads x KV cells x batch floats, which can exceed everything else here.
    """
    hidden = 2 * arch.n_embd
    output_phase = batch_size * FLOAT_BYTES * (arch.n_vocab + hidden)
    attention_phase = kv_cells * batch_size * 2 + batch_size * FLOAT_BYTES * 12 * arch.n_embd
    if arch.uses_mla:
        # MLA decompresses the latent into per-head keys and values for the whole batch.
        attention_phase += batch_size * FLOAT_BYTES * arch.n_head * (
            arch.head_dim_k + arch.head_dim_v)
    ffn_width = max(arch.n_ff, arch.n_expert_used * arch.n_ff_expert)
    ffn_phase = batch_size * FLOAT_BYTES * (2 * ffn_width + hidden)
    return max(output_phase, attention_phase, ffn_phase)


def output_buffer_bytes(arch: Architecture, rows: int) -> int:
    """Return the host buffer that receives the logits of one decode call."""
    return arch.n_vocab * FLOAT_BYTES * rows


def runtime_overhead_bytes(arch: Architecture) -> int:
    """Return the resident memory beyond buffers: vocabulary tables and fixed state."""
    return FIXED_RUNTIME_BYTES + VOCAB_BYTES_PER_TOKEN * arch.n_vocab


def estimate_memory(arch: Architecture, weight_bytes: int, workload: Workload) -> MemoryEstimate:
    """Return every part of the memory of ``arch`` running ``workload`` on one device or CPU."""
    return MemoryEstimate(
        weights=weight_bytes,
        kv_cache=kv_cache_bytes(arch, workload),
        compute=compute_buffer_bytes(arch, workload.batch_size, workload.kv_cells),
        output=output_buffer_bytes(arch, workload.output_rows),
        runtime=runtime_overhead_bytes(arch),
    )
