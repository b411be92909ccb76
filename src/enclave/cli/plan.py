"""``enclave plan``: what a model needs in memory and bandwidth, and which hardware fits."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli.table import format_table
from enclave.config import load_settings
from enclave.i18n import _
from enclave.planner.memory import Workload
from enclave.planner.service import Plan, build_plan, plan_to_dict

MIB = 1024**2
GIB = 1024**3

HELP = _("Plan memory, hardware and decode speed for a model before buying or deploying.")


class KvType(StrEnum):
    F16 = "f16"
    Q8_0 = "q8_0"


def format_bytes(value: float) -> str:
    """Format a byte count in GiB, or MiB below 1 GiB."""
    if abs(value) >= GIB:
        return f"{value / GIB:.2f} GiB"
    return f"{value / MIB:.1f} MiB"


def _describe_model(plan: Plan) -> str:
    arch = plan.model.arch
    n_params = sum(tensor.n_elements for tensor in plan.model.tensors)
    lines = [
        _("Model: {name} ({params:.2f} B parameters; from {source})", name=arch.name,
          params=n_params / 1e9, source=_source_text(plan)),
        _("Architecture: {family}, {layers} layers, {heads} attention heads, {kv_heads} KV "
          "heads of size {head_dim}, embedding {embd}, feed-forward {ff}, vocabulary {vocab}, "
          "trained context {context}", family=arch.family, layers=arch.n_layer,
          heads=arch.n_head, kv_heads=arch.n_head_kv, head_dim=arch.head_dim_k,
          embd=arch.n_embd, ff=arch.n_ff, vocab=arch.n_vocab, context=arch.context_length),
    ]
    if arch.n_expert:
        lines.append(_("Experts: {experts} routed ({used} per token), {shared} shared, "
                       "feed-forward {ff} each", experts=arch.n_expert,
                       used=arch.n_expert_used, shared=arch.n_expert_shared,
                       ff=arch.n_ff_expert))
    if arch.uses_mla:
        lines.append(_("Multi-head latent attention: KV cache of {k} + {v} values per token "
                       "and layer", k=arch.kv_k_width, v=arch.kv_v_width))
    workload = plan.workload
    lines.append(_("Workload: {concurrency} sequences x {context} tokens = {cells} KV cells, "
                   "KV cache {kv_type}, batch {batch} tokens", concurrency=workload.concurrency,
                   context=workload.context, cells=workload.kv_cells,
                   kv_type=workload.kv_type, batch=workload.batch_size))
    return "\n".join(lines)


def _source_text(plan: Plan) -> str:
    """Return where the architecture came from: a path, or the config.json of a catalogue entry."""
    # Catalogue entries record their source as "config.json of <Hugging Face repository>".
    prefix = "config.json of "
    if plan.model.kind == "catalogue" and plan.model.location.startswith(prefix):
        return _("config.json of {repository}",
                 repository=plan.model.location.removeprefix(prefix))
    return plan.model.location


def _memory_table(plan: Plan) -> str:
    headers = [_("type"), _("bits/weight"), _("weights"), _("KV cache"), _("compute"),
               _("other"), _("total")]
    rows = []
    for row in plan.rows:
        name = row.weights.type_name
        if row.weights.exact:
            name += _(" (file)")
        if row is plan.selected:
            name = "* " + name
        memory = row.memory
        rows.append([
            name, f"{row.weights.bits_per_weight:.2f}", format_bytes(memory.weights),
            format_bytes(memory.kv_cache), format_bytes(memory.compute),
            format_bytes(memory.output + memory.runtime), format_bytes(memory.total),
        ])
    return format_table(headers, rows, "lrrrrrr", rule=True)


def _split_text(devices: int, split: str) -> str:
    if split == "tensor":
        return _("{devices} x, tensor parallel", devices=devices)
    if split == "layer":
        return _("{devices} x, layer split", devices=devices)
    return "1"


def _hardware_table(plan: Plan) -> str:
    headers = [_("accelerator"), _("devices"), _("memory per device"), _("max sequences"),
               _("tok/s, 1 sequence"),
               _("tok/s in total, concurrency {n}", n=plan.workload.concurrency)]
    rows = []
    for rec in plan.recommendations:
        used = f"{format_bytes(rec.per_device_bytes)} / {format_bytes(rec.usable_bytes)}"
        if not rec.fits:
            rows.append([rec.accelerator.name, _("does not fit in {devices}",
                                                 devices=rec.devices), used, "-", "-", "-"])
            continue
        devices = _split_text(rec.devices, rec.split)
        if rec.nodes > 1:
            devices += _(" ({nodes} nodes)", nodes=rec.nodes)
        rows.append([rec.accelerator.name, devices, used, str(rec.max_concurrency),
                     f"{rec.decode_tokens_s:.1f}", f"{rec.aggregate_tokens_s:.1f}"])
    return format_table(headers, rows, "llrrrr", rule=True)


def _machine_text(plan: Plan) -> str:
    machine = plan.machine
    verdict = plan.verdict
    lines = [_("This machine: {available} of {total} RAM available", available=format_bytes(
        machine.ram_available_bytes), total=format_bytes(machine.ram_total_bytes))]
    if machine.gpus:
        for gpu in machine.gpus:
            lines.append(_("  GPU {name}: {free} free of {total}", name=gpu.name,
                           free=format_bytes(gpu.free_bytes), total=format_bytes(
                               gpu.total_bytes)))
        if not machine.gpu_offload:
            lines.append(_("  This llama-cpp-python build cannot offload to a GPU; the plan "
                           "for this machine uses the CPU."))
    else:
        lines.append(_("  No GPU found: {reason}.", reason=machine.gpu_note or _("none")))
    device = _("GPU memory") if verdict.device == "gpu" else _("RAM")
    if verdict.fits:
        lines.append(_("It can run {quant} with this workload: it needs {needed} of {available} "
                       "{device}.", quant=plan.selected.weights.type_name,
                       needed=format_bytes(verdict.needed_bytes),
                       available=format_bytes(verdict.available_bytes), device=device))
    else:
        lines.append(_("It cannot run {quant} with this workload: it needs {needed} but only "
                       "{available} {device} is available. Choose a smaller --quant, "
                       "--context or --concurrency.", quant=plan.selected.weights.type_name,
                       needed=format_bytes(verdict.needed_bytes),
                       available=format_bytes(verdict.available_bytes), device=device))
    return "\n".join(lines)


def render_plan(plan: Plan) -> str:
    """Render the plan as the text tables ``enclave plan`` prints."""
    efficiency = round(plan.settings.bandwidth_efficiency * 100)
    sections = [
        _describe_model(plan),
        _("Memory on one device or in RAM (* = selected; 'other' = logits buffer and "
          "runtime):"),
        _memory_table(plan),
        _("Hardware for {quant} (decode rates: memory-bandwidth roofline at {efficiency}% of "
          "peak bandwidth, KV cache read at the full {context}-token context; GPUs reserve "
          "{reserved} MiB each for the driver):", quant=plan.selected.weights.type_name,
          efficiency=efficiency, context=plan.workload.context,
          reserved=plan.settings.gpu_reserved_mib),
        _hardware_table(plan),
        _machine_text(plan),
    ]
    return "\n\n".join(sections)


def plan(
    model: Annotated[str, typer.Argument(
        help=_("GGUF file, Hugging Face model folder (with config.json) or a known model "
               "name such as llama-3-8b or deepseek-v3."), show_default=False)],
    quant: Annotated[str | None, typer.Option(
        "--quant", "-q", help=_("Quantization type to recommend hardware for (Q4_K_M, Q8_0, "
                                "F16, ...). Default: the file's own type, else Q4_K_M."))]
    = None,
    context: Annotated[int | None, typer.Option(
        min=1, help=_("Tokens per sequence, prompt and answer together. Default: "
                      "engine.context_size."))] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help=_("Sequences decoded at the same time. Default: engine.parallel."))]
    = None,
    kv_type: Annotated[KvType, typer.Option(
        "--kv-type", help=_("Element type of the KV cache."))] = KvType.F16,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help=_("Tokens per decode call (sizes the compute buffer). "
                                      "Default: engine.batch_size."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print the plan as JSON."))] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="PATH",
        help=_("Settings file (TOML). Default: $ENCLAVE_CONFIG or ./enclave.toml."))] = None,
) -> None:
    """Plan memory, hardware and decode speed for a model before buying or deploying."""
    settings = load_settings(config)
    workload = Workload(
        context=context or settings.engine.context_size,
        concurrency=concurrency or settings.engine.parallel,
        kv_type=kv_type.value,
        batch_size=batch_size or settings.engine.batch_size,
    )
    result = build_plan(model, quant, workload, settings.planner)
    if as_json:
        payload: dict[str, Any] = plan_to_dict(result)
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        typer.echo(render_plan(result))
