"""The whole plan for one model: memory per quantization, recommendations, this machine."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from enclave.errors import ModelLoadError
from enclave.i18n import _
from enclave.models.gguf_reader import TensorInfo, read_gguf
from enclave.models.quant_types import FILE_TYPES, file_type
from enclave.models.safetensors_reader import read_hf_folder
from enclave.planner.architecture import Architecture, from_gguf, from_hf_config, tensor_layout
from enclave.planner.catalogue import known_model
from enclave.planner.errors import PlannerError
from enclave.planner.machine import Machine, inspect_machine
from enclave.planner.memory import MemoryEstimate, Workload, estimate_memory
from enclave.planner.recommend import MIB, Recommendation, recommend
from enclave.planner.settings import PlannerSettings
from enclave.planner.weights import WeightEstimate, estimate_weights, file_weights

logger = logging.getLogger(__name__)

# The quantization types the memory table lists, largest first. BF16 is left out because it
# has the same size as F16.
TABLE_TYPES = ("F32", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
DEFAULT_TYPE = "Q4_K_M"

# A parameter count computed from config.json that differs from the checkpoint's by more
# than this share means the architecture was not fully understood.
_PARAM_MISMATCH = 0.02


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference turned into an architecture and a full tensor table."""

    arch: Architecture
    tensors: list[TensorInfo]
    kind: str
    location: str
    file_weights: WeightEstimate | None = None
    checkpoint_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class QuantRow:
    weights: WeightEstimate
    memory: MemoryEstimate


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether this machine can run the selected configuration, and on what."""

    fits: bool
    device: str
    needed_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class Plan:
    model: ResolvedModel
    workload: Workload
    selected: QuantRow
    rows: list[QuantRow]
    recommendations: list[Recommendation]
    machine: Machine
    verdict: Verdict
    settings: PlannerSettings


def resolve_model(reference: str) -> ResolvedModel:
    """Resolve a GGUF file, a Hugging Face folder or a catalogue name."""
    path = Path(reference).expanduser()
    if path.is_file():
        try:
            summary = read_gguf(path)
        except ModelLoadError as exc:
            raise PlannerError(_("{error} The planner reads GGUF files, Hugging Face folders "
                                 "and known model names.", error=exc)) from None
        return ResolvedModel(from_gguf(summary), summary.tensors, "gguf", str(path),
                             file_weights=file_weights(summary),
                             checkpoint_bytes=summary.file_size)
    if path.is_dir():
        return _resolve_folder(path)
    arch = known_model(reference)
    return ResolvedModel(arch, tensor_layout(arch), "catalogue", arch.source)


def _resolve_folder(path: Path) -> ResolvedModel:
    try:
        folder = read_hf_folder(path)
    except ModelLoadError as exc:
        raise PlannerError(str(exc)) from None
    arch = from_hf_config(folder.config, path.name)
    tensors = tensor_layout(arch)
    planned = sum(tensor.n_elements for tensor in tensors)
    if folder.entries and abs(planned - folder.n_params) > _PARAM_MISMATCH * folder.n_params:
        logger.warning(
            "config.json of %s implies %d parameters but its safetensors hold %d; the plan "
            "follows config.json", path, planned, folder.n_params,
        )
    return ResolvedModel(arch, tensors, "hf", str(path),
                         checkpoint_bytes=folder.tensor_bytes or None)


def _row(model: ResolvedModel, type_name: str, workload: Workload) -> QuantRow:
    exact = model.file_weights
    if exact is not None and exact.type_name == type_name:
        weights = exact
    else:
        weights = estimate_weights(model.tensors, file_type(type_name), model.arch)
    return QuantRow(weights, estimate_memory(model.arch, weights.total_bytes, workload))


def _verdict(model: ResolvedModel, row: QuantRow, machine: Machine,
             settings: PlannerSettings) -> Verdict:
    memory = row.memory
    if machine.gpus and machine.gpu_offload:
        needed = (row.weights.device_bytes(model.arch) + memory.kv_cache
                  + len(machine.gpus) * (memory.compute + settings.gpu_reserved_mib * MIB))
        available = sum(gpu.free_bytes for gpu in machine.gpus)
        return Verdict(needed <= available, "gpu", needed, available)
    return Verdict(memory.total <= machine.ram_available_bytes, "cpu", memory.total,
                   machine.ram_available_bytes)


def build_plan(reference: str, quant: str | None, workload: Workload,
               settings: PlannerSettings, machine: Machine | None = None) -> Plan:
    """Plan ``reference`` at ``quant`` (default: the file's own type, else Q4_K_M)."""
    model = resolve_model(reference)
    own_type = model.file_weights.type_name if model.file_weights else None
    selected_name = quant.upper() if quant else (own_type or DEFAULT_TYPE)
    if selected_name not in FILE_TYPES and selected_name != own_type:
        raise PlannerError(_("--quant {quant!r} is not one of {types}.", quant=quant,
                             types=", ".join(FILE_TYPES)))

    names = list(TABLE_TYPES)
    if selected_name not in names:
        names.append(selected_name)
    if model.file_weights is not None and model.file_weights.type_name not in names:
        names.append(model.file_weights.type_name)
    rows = [_row(model, name, workload) for name in names]
    selected = next(row for row in rows if row.weights.type_name == selected_name)

    machine = machine or inspect_machine()
    return Plan(
        model=model,
        workload=workload,
        selected=selected,
        rows=rows,
        recommendations=recommend(model.arch, selected.weights, workload, settings),
        machine=machine,
        verdict=_verdict(model, selected, machine, settings),
        settings=settings,
    )


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """Return the plan as plain JSON-ready values (bytes as integers)."""
    model = plan.model
    return {
        "model": {
            "kind": model.kind,
            "location": model.location,
            "checkpoint_bytes": model.checkpoint_bytes,
            "architecture": asdict(model.arch),
            "n_params": sum(tensor.n_elements for tensor in model.tensors),
        },
        "workload": {**asdict(plan.workload), "kv_cells": plan.workload.kv_cells},
        "selected": plan.selected.weights.type_name,
        "quantizations": [
            {
                "type": row.weights.type_name,
                "exact": row.weights.exact,
                "bits_per_weight": round(row.weights.bits_per_weight, 3),
                "weights_bytes": row.weights.total_bytes,
                **{f"{part}_bytes": value for part, value in asdict(row.memory).items()
                   if part != "weights"},
                "total_bytes": row.memory.total,
            }
            for row in plan.rows
        ],
        "assumptions": {
            "bandwidth_efficiency": plan.settings.bandwidth_efficiency,
            "gpu_reserved_mib": plan.settings.gpu_reserved_mib,
            "decode_context_tokens": plan.workload.context,
        },
        "recommendations": [
            {
                "accelerator": rec.accelerator.name,
                "kind": rec.accelerator.kind.value,
                "devices": rec.devices,
                "nodes": rec.nodes,
                "split": rec.split,
                "fits": rec.fits,
                "per_device_bytes": rec.per_device_bytes,
                "usable_bytes_per_device": rec.usable_bytes,
                "max_concurrency": rec.max_concurrency,
                "decode_tokens_per_s": round(rec.decode_tokens_s, 1),
                "aggregate_tokens_per_s": round(rec.aggregate_tokens_s, 1),
            }
            for rec in plan.recommendations
        ],
        "machine": {
            **asdict(plan.machine),
            "verdict": asdict(plan.verdict),
        },
    }
