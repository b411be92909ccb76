"""Recommend a configuration of each accelerator: device count, split, concurrency, speed.

Decode speed comes from the memory-bandwidth roofline. Generating one token reads every
weight the token uses plus the whole KV cache of its sequence, and at batch sizes that serve
a few dozen users the arithmetic takes less time than the reads. So

    tokens/s per sequence = efficiency x bandwidth / (weight bytes read + KV bytes read)

with the KV cache read at the full context (the worst case of a conversation). Several
sequences decoded together share one read of the weights, which is where batching gains.

NOTE: the roofline leaves out inter-device communication and kernel-launch latency, so the
rates are upper bounds. With tensor parallelism at small batch sizes, measured rates are often
several times lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from enclave.planner.architecture import Architecture
from enclave.planner.hardware import ACCELERATORS, Accelerator, Kind
from enclave.planner.memory import (
    Workload,
    compute_buffer_bytes,
    kv_bytes_per_token,
    output_buffer_bytes,
    runtime_overhead_bytes,
)
from enclave.planner.settings import PlannerSettings
from enclave.planner.weights import WeightEstimate

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The smallest configuration of one accelerator that fits the workload.

    ``split`` is ``tensor`` when every layer is divided across the devices (their bandwidths
    add up), ``layer`` when whole layers go to different devices (llama.cpp's default split:
    they work one after the other, so speed stays that of one device) and ``none`` for one
    device. ``fits`` is false when even ``max_devices`` are not enough; the other fields then
    describe that largest configuration.
    """

    accelerator: Accelerator
    devices: int
    nodes: int
    split: str
    fits: bool
    per_device_bytes: int
    usable_bytes: int
    max_concurrency: int
    decode_tokens_s: float
    aggregate_tokens_s: float


def _device_counts(accelerator: Accelerator, settings: PlannerSettings) -> list[int]:
    if accelerator.kind is not Kind.GPU:
        return [1]
    counts = [1]
    while counts[-1] * 2 <= settings.max_devices:
        counts.append(counts[-1] * 2)
    return counts


def _kv_share(arch: Architecture, devices: int, tensor_split: bool) -> float:
    """Return the share of the KV cache each device stores."""
    if devices == 1:
        return 1.0
    if not tensor_split:
        return 1.0 / devices
    if arch.uses_mla:
        # The single latent "head" cannot be divided; every device keeps a full copy.
        return 1.0
    heads_per_device = math.ceil(arch.n_head_kv / devices)
    return heads_per_device / arch.n_head_kv


def _weights_read(arch: Architecture, weights: WeightEstimate, sequences: int) -> float:
    """Return the weight bytes one decode step of ``sequences`` tokens reads."""
    per_token = weights.bytes_per_token(arch)
    if not arch.n_expert or sequences <= 1:
        return float(per_token)
    # Each token picks n_expert_used of n_expert experts; with several tokens the step reads
    # the union, whose expected size grows towards all experts.
    share_one = arch.n_expert_used / arch.n_expert
    share_all = 1.0 - (1.0 - share_one) ** sequences
    expert_read_one = weights.expert_bytes * share_one
    return per_token - expert_read_one + weights.expert_bytes * share_all


def _decode_rate(arch: Architecture, weights: WeightEstimate, kv_per_sequence: int,
                 sequences: int, bandwidth: float) -> float:
    step_bytes = _weights_read(arch, weights, sequences) + sequences * kv_per_sequence
    return sequences * bandwidth / step_bytes


def _configuration(arch: Architecture, weights: WeightEstimate, workload: Workload,
                   accelerator: Accelerator, devices: int,
                   settings: PlannerSettings) -> Recommendation:
    tensor_split = devices > 1 and arch.n_head % devices == 0
    kv_per_sequence = kv_bytes_per_token(arch, workload.kv_type) * workload.context
    kv_total = kv_bytes_per_token(arch, workload.kv_type) * workload.kv_cells
    compute = compute_buffer_bytes(arch, workload.batch_size, workload.kv_cells)
    host_side = output_buffer_bytes(arch, workload.output_rows) + runtime_overhead_bytes(arch)

    if accelerator.kind is Kind.GPU:
        share = _kv_share(arch, devices, tensor_split)
        fixed = (weights.device_bytes(arch) / devices + compute
                 + settings.gpu_reserved_mib * MIB)
        per_sequence = kv_per_sequence * share
        per_device = fixed + kv_total * share
    else:
        # CPU and unified memory hold everything, host-side buffers included.
        fixed = weights.total_bytes + compute + host_side
        per_sequence = kv_per_sequence + output_buffer_bytes(arch, 1)
        per_device = fixed + kv_total

    usable = accelerator.usable_bytes
    max_concurrency = max(0, int((usable - fixed) // per_sequence)) if usable > fixed else 0
    bandwidth = accelerator.bandwidth_bytes_s * settings.bandwidth_efficiency
    if tensor_split:
        bandwidth *= devices
    fits = per_device <= usable
    split = "none"
    if tensor_split:
        split = "tensor"
    elif devices > 1:
        split = "layer"
    return Recommendation(
        accelerator=accelerator,
        devices=devices,
        nodes=math.ceil(devices / accelerator.max_per_node),
        split=split,
        fits=fits,
        per_device_bytes=int(per_device),
        usable_bytes=usable,
        max_concurrency=max_concurrency,
        decode_tokens_s=_decode_rate(arch, weights, kv_per_sequence, 1, bandwidth),
        aggregate_tokens_s=_decode_rate(arch, weights, kv_per_sequence, workload.concurrency,
                                        bandwidth),
    )


def recommend(arch: Architecture, weights: WeightEstimate, workload: Workload,
              settings: PlannerSettings,
              accelerators: tuple[Accelerator, ...] = ACCELERATORS) -> list[Recommendation]:
    """Return, for each accelerator, the fewest devices that hold the workload."""
    recommendations = []
    for accelerator in accelerators:
        chosen: Recommendation | None = None
        for devices in _device_counts(accelerator, settings):
            chosen = _configuration(arch, weights, workload, accelerator, devices, settings)
            if chosen.fits:
                break
        assert chosen is not None
        recommendations.append(chosen)
    return recommendations
