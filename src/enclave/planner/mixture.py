"""Which ggml type llama.cpp's quantizer gives each tensor, and so the weight bytes of a model.

A file type is a recipe, not one type. The rules below restate those of
``llama_tensor_get_type`` in llama.cpp's src/llama-quant.cpp (2025) for the file types in
``enclave.models.quant_types``, without an importance matrix:

* only tensors named ``*weight`` with two or more dimensions are quantized, and never norms,
  the expert router (``ffn_gate_inp``) or position embeddings;
* the output matrix (or the token embeddings when the two are tied) becomes Q6_K, or Q8_0
  when its rows do not fill whole 256-weight blocks;
* Q4_K_M and Q5_K_M give Q6_K to ``attn_v`` and ``ffn_down`` in the first and last eighth of
  the layers and in every third layer between ("use more bits");
* Q2_K, Q3_K_* and Q4_K_S raise ``attn_v``, ``attn_output`` and ``ffn_down`` as listed in
  ``_attn_v_type`` and friends; 8-expert models (Mixtral) get Q8_0 for ``attn_k``/``attn_v``;
* a row that does not fill whole blocks of the chosen type falls back: Q2_K, Q3_K and IQ4_XS
  to Q4_0 (IQ4_NL in older llama.cpp, the same 4.5 bits per weight), Q4_K to Q5_0, Q5_K to
  Q5_1, Q6_K to Q8_0, and to F16 if even that does not fit.

tests/integration/test_quantize_*.py checks the predicted bytes against files that
llama.cpp's quantizer writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gguf import GGMLQuantizationType as T

from enclave.models.gguf_reader import TensorInfo
from enclave.models.quant_types import FileType, block_layout, ggml_type, tensor_bytes
from enclave.planner.architecture import Architecture

_LAYER = re.compile(r"^blk\.(\d+)\.")
_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "position_embd.weight",
                  "token_types.weight", "ssm_conv1d.weight", "attn_rel_b.weight")
_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.IQ4_XS: T.Q4_0, T.Q4_K: T.Q5_0,
             T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


@dataclass(frozen=True, slots=True)
class TypedTensor:
    """A tensor with the type the quantizer gives it and the bytes it then takes."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int


@dataclass(slots=True)
class _State:
    """What the rules need to know about the whole model, and the running tensor counters."""

    file_type: FileType
    n_layer: int
    n_gqa: int
    n_expert: int
    is_70b: bool
    is_falcon: bool
    has_output: bool
    n_attention_wv: int
    i_attention_wv: int = 0


def use_more_bits(layer: int, n_layer: int) -> bool:
    """Return whether llama.cpp spends more bits on this layer in the *_K_M mixtures."""
    eighth = n_layer // 8
    return layer < eighth or layer >= 7 * n_layer // 8 or (layer - eighth) % 3 == 2


def should_quantize(tensor: TensorInfo) -> bool:
    """Return whether llama.cpp's quantizer changes this tensor's type at all."""
    return (
        tensor.name.endswith("weight")
        and tensor.n_dims >= 2
        and not any(part in tensor.name for part in _NOT_QUANTIZED)
    )


def _sort_key(tensor: TensorInfo) -> tuple[int, str]:
    # llama.cpp walks tensors ordered by layer number, then by name; the attn_v counter of the
    # mixture rules depends on that order.
    match = _LAYER.match(tensor.name)
    return (int(match.group(1)) if match else -1, tensor.name)


def _layer_of(tensor: TensorInfo) -> int:
    match = _LAYER.match(tensor.name)
    return int(match.group(1)) if match else 0


def _output_type(kind: T, tensor: TensorInfo, state: _State) -> T:
    if tensor.row_length % block_layout(kind)[0] or state.is_falcon:
        return T.Q8_0
    return kind if kind == T.Q8_0 else T.Q6_K


def _attn_v_type(kind: T, state: _State) -> T:
    name = state.file_type.name
    index = state.i_attention_wv
    if name == "Q2_K":
        kind = T.Q4_K if state.n_gqa >= 4 else T.Q3_K
    elif name == "Q3_K_M":
        kind = T.Q5_K if index < 2 else T.Q4_K
    elif name == "Q3_K_L" or (name in ("IQ4_NL", "IQ4_XS") and state.n_gqa >= 4):
        kind = T.Q5_K
    elif name in ("Q4_K_M", "Q5_K_M") and use_more_bits(index, state.n_attention_wv):
        kind = T.Q6_K
    elif name == "Q4_K_S" and index < 4:
        kind = T.Q5_K
    if state.is_70b and kind in (T.Q3_K, T.Q4_K):
        # In 70B-class models 8 query heads share each attn_v, which makes the tensor small
        # enough to afford Q5_K.
        kind = T.Q5_K
    if state.n_expert == 8:
        kind = T.Q8_0
    return kind


def _ffn_down_type(kind: T, layer: int, state: _State) -> T:
    name = state.file_type.name
    n_layer = state.n_layer
    if name == "Q2_K":
        return T.Q3_K
    if name == "Q3_K_M":
        if layer < n_layer // 16:
            return T.Q5_K
        return T.Q4_K if not state.is_falcon or use_more_bits(layer, n_layer) else T.Q3_K
    if name == "Q3_K_L":
        return T.Q4_K if state.is_falcon else T.Q5_K
    if name == "Q4_K_M":
        if state.is_falcon:
            if layer < n_layer // 16:
                return T.Q6_K
            return T.Q5_K if use_more_bits(layer, n_layer) else kind
        return T.Q6_K if use_more_bits(layer, n_layer) else kind
    if name in ("IQ4_NL", "IQ4_XS") and layer < n_layer // 8:
        return T.Q5_K
    if name == "Q5_K_M" and use_more_bits(layer, n_layer):
        return T.Q6_K
    if name == "Q4_K_S" and not state.is_falcon and layer < n_layer // 8:
        return T.Q5_K
    return kind


def _attn_output_type(kind: T, state: _State) -> T:
    name = state.file_type.name
    if state.is_falcon:
        return T.Q4_K if name == "Q3_K_L" else kind
    if state.n_expert == 8:
        return T.Q5_K if name in ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                                  "IQ4_XS") else kind
    return {"Q2_K": T.Q3_K, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K}.get(name, kind)


def _attn_qkv_type(kind: T, state: _State) -> T:
    return {"Q3_K_M": T.Q4_K, "Q3_K_L": T.Q4_K, "Q4_K_M": T.Q5_K,
            "Q5_K_M": T.Q6_K}.get(state.file_type.name, kind)


def _mixture_type(tensor: TensorInfo, state: _State) -> T:
    """Apply the per-tensor rules to a tensor that is quantized to a block type."""
    kind = state.file_type.base
    name = tensor.name
    if name == "output.weight" or (not state.has_output and name == "token_embd.weight"):
        kind = _output_type(kind, tensor, state)
    elif name == "token_embd.weight":
        pass
    elif "attn_v.weight" in name:
        kind = _attn_v_type(kind, state)
        state.i_attention_wv += 1
    elif "attn_k.weight" in name and state.n_expert == 8:
        kind = T.Q8_0
    elif "ffn_down" in name:
        kind = _ffn_down_type(kind, _layer_of(tensor), state)
    elif "attn_output.weight" in name:
        kind = _attn_output_type(kind, state)
    elif "attn_qkv.weight" in name:
        kind = _attn_qkv_type(kind, state)

    if tensor.row_length % block_layout(kind)[0]:
        kind = _FALLBACK.get(kind, kind)
        if tensor.row_length % block_layout(kind)[0]:
            kind = T.F16
    return kind


def predict_types(tensors: list[TensorInfo], file_type: FileType,
                  arch: Architecture) -> list[TypedTensor]:
    """Return every tensor with the type and size it gets in a ``file_type`` file.

    ``tensors`` are those of a full-precision source (or any source: tensors that are not
    quantized keep their type). A tensor that llama.cpp would refuse because its rows do not
    fill whole blocks of the base type keeps its source type here.
    """
    state = _State(
        file_type=file_type,
        n_layer=arch.n_layer,
        n_gqa=arch.n_gqa,
        n_expert=arch.n_expert,
        is_70b=arch.family in ("llama", "qwen2") and arch.n_layer == 80,
        is_falcon=arch.family == "falcon",
        has_output=any(tensor.name == "output.weight" for tensor in tensors),
        n_attention_wv=sum(
            1 for tensor in tensors
            if any(part in tensor.name for part in ("attn_v.weight", "attn_qkv.weight",
                                                    "attn_kv_b.weight"))
        ),
    )
    typed: list[TypedTensor] = []
    for tensor in sorted(tensors, key=_sort_key):
        kind = ggml_type(tensor.type_name)
        if should_quantize(tensor):
            kind = _mixture_type(tensor, state) if file_type.is_quantized else file_type.base
        if tensor.row_length % block_layout(kind)[0]:
            kind = ggml_type(tensor.type_name)
        typed.append(TypedTensor(tensor.name, kind.name, tensor.shape, tensor.n_elements,
                                 tensor_bytes(kind, tensor.shape)))
    return typed
