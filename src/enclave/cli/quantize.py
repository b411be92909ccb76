"""``enclave quantize``, ``enclave convert`` and ``enclave eval-quant``: make quantized and
full-precision GGUF files, and measure what each quantization costs in quality and speed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli.plan import format_bytes
from enclave.cli.table import format_table
from enclave.i18n import _
from enclave.logs import setup_logging
from enclave.models.quant_types import FILE_TYPES
from enclave.quantize.convert import dequantize_gguf
from enclave.quantize.evaluate import (
    DEFAULT_DECODE_TOKENS,
    DEFAULT_WINDOW,
    EvalReport,
    LogitSource,
    evaluate,
    report_to_dict,
)
from enclave.quantize.hf_convert import convert_hf
from enclave.quantize.hf_export import export_hf
from enclave.quantize.quantizer import quantize_gguf
from enclave.quantize.text import DEFAULT_TEXT_NAME, default_text

Progress = Callable[[int, int, str], None]

QUANTIZE_HELP = _("Quantize a GGUF model with llama.cpp's quantizer.")
CONVERT_HELP = _("Write a full-precision GGUF (from a quantized GGUF or a Hugging Face folder), "
                 "or a Hugging Face folder from a Llama GGUF.")
EVAL_QUANT_HELP = _("Compare quantized models with a reference: size, speed, perplexity, KL "
                    "divergence and top-1 agreement on the same text.")


class FullPrecision(StrEnum):
    F32 = "f32"
    F16 = "f16"


class OutputFormat(StrEnum):
    GGUF = "gguf"
    HF = "hf"


@contextmanager
def _progress_bar(label: str) -> Iterator[Progress]:
    """Yield a progress callback that drives a progress bar on stderr.

    The bar appears with the first update, so an error raised before any work starts is
    printed alone.
    """
    with ExitStack() as stack:
        bars: list[Any] = []

        def update(done: int, total: int, _name: str) -> None:
            if not bars:
                bars.append(stack.enter_context(typer.progressbar(
                    length=total, label=label, file=sys.stderr, show_pos=True)))
            bars[0].update(done - bars[0].pos)

        yield update


def quantize(
    source: Annotated[Path, typer.Argument(
        help=_("GGUF file to quantize, ideally F32/F16/BF16."), show_default=False)],
    destination: Annotated[Path, typer.Argument(
        help=_("GGUF file to write."), show_default=False)],
    type_name: Annotated[str, typer.Option(
        "--type", "-t", help=_("Quantization type: {types}.", types=", ".join(FILE_TYPES)))]
    = "Q4_K_M",
    allow_requantize: Annotated[bool, typer.Option(
        "--allow-requantize", help=_("Quantize a file that is already quantized; the errors "
                                     "of both roundings add up."))] = False,
    threads: Annotated[int | None, typer.Option(
        min=1, help=_("Threads for llama.cpp's quantizer. Default: all CPU cores."))] = None,
) -> None:
    """Quantize a GGUF model with llama.cpp's quantizer."""
    setup_logging("warning")
    with _progress_bar(_("Quantizing")) as progress:
        result = quantize_gguf(source, destination, type_name, allow_requantize=allow_requantize,
                               threads=threads, progress=progress)
    typer.echo(_("Wrote {path}: {type}, {size} ({ratio:.1%} of the source), {tensors} tensors "
                 "in {seconds:.1f} s.", path=result.destination, type=result.file_type.name,
                 size=format_bytes(result.output_bytes),
                 ratio=result.output_bytes / result.source_bytes, tensors=result.tensors,
                 seconds=result.seconds))
    if result.fallback_tensors:
        typer.echo(_("{count} tensors got a fallback type because their rows do not fill whole "
                     "{base} blocks.", count=result.fallback_tensors,
                     base=result.file_type.base.name))


def convert(
    source: Annotated[Path, typer.Argument(
        help=_("GGUF file, or a Hugging Face folder of a Llama-architecture model."),
        show_default=False)],
    destination: Annotated[Path, typer.Argument(
        help=_("GGUF file to write, or a folder with --format hf."), show_default=False)],
    type_name: Annotated[FullPrecision, typer.Option(
        "--type", "-t", help=_("Precision of the weights written."))] = FullPrecision.F16,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", help=_("gguf writes a GGUF file; hf writes a Hugging Face folder (F32) of "
                           "a Llama GGUF, for the PyTorch comparison in eval-quant."))]
    = OutputFormat.GGUF,
    tokenizer_pre: Annotated[str | None, typer.Option(
        "--tokenizer-pre", help=_("llama.cpp pre-tokenizer name (llama-bpe, smollm, gpt2, "
                                  "...) when converting a folder whose tokenizer.json does "
                                  "not identify it."))] = None,
) -> None:
    """Write a full-precision GGUF (from a quantized GGUF or a Hugging Face folder), or a
    Hugging Face folder from a Llama GGUF."""
    setup_logging("warning")
    if output_format is OutputFormat.HF:
        if source.is_dir():
            raise typer.BadParameter(_("--format hf needs a GGUF file as the source."),
                                     param_hint="SOURCE")
        if type_name is not FullPrecision.F32:
            typer.echo(_("Hugging Face folders are written in F32; --type is ignored."),
                       err=True)
        with _progress_bar(_("Exporting")) as progress:
            exported = export_hf(source, destination, progress=progress)
        typer.echo(_("Wrote {folder}: {tensors} tensors in {seconds:.1f} s.",
                     folder=exported.folder, tensors=exported.tensors,
                     seconds=exported.seconds))
        return

    with _progress_bar(_("Converting")) as progress:
        if source.is_dir():
            result = convert_hf(source, destination, type_name.value,
                                tokenizer_pre=tokenizer_pre, progress=progress)
        else:
            result = dequantize_gguf(source, destination, type_name.value, progress=progress)
    typer.echo(_("Wrote {path}: {type}, {size}, {tensors} tensors in {seconds:.1f} s.",
                 path=result.destination, type=result.type_name,
                 size=format_bytes(result.output_bytes), tensors=result.tensors,
                 seconds=result.seconds))


def render_report(report: EvalReport) -> str:
    """Render an evaluation report as the table ``enclave eval-quant`` prints."""
    headers = [_("type"), _("model"), _("size"), _("vs ref"), _("load s"), _("prefill tok/s"),
               _("decode tok/s"), _("PPL"), _("delta PPL"), _("KLD"), _("top-1")]
    rows = []
    for row in report.rows:
        rows.append([
            row.type_name + (_(" (ref)") if row.is_reference else ""), row.label,
            format_bytes(row.size_bytes), f"{row.size_ratio:.1%}", f"{row.load_seconds:.2f}",
            f"{row.prefill_tokens_s:.1f}", f"{row.decode_tokens_s:.1f}",
            f"{row.perplexity:.3f}", f"{row.delta_ppl_percent:+.2f}%", f"{row.mean_kld:.5f}",
            f"{row.top1_agreement:.1%}",
        ])
    header = _("Reference {reference}; {tokens} tokens of {text} in windows of {window} "
               "({positions} scored positions); threads: {threads}.",
               reference=report.reference.name, tokens=report.tokens, text=report.text_name,
               window=report.window, positions=report.scored_positions,
               threads=report.threads)
    return header + "\n\n" + format_table(headers, rows, "llrrrrrrrrr", rule=True)


def eval_quant(
    reference: Annotated[Path, typer.Argument(
        help=_("Reference GGUF, normally F32 or F16."), show_default=False)],
    candidates: Annotated[list[Path] | None, typer.Argument(
        help=_("GGUF files to compare with the reference."), show_default=False)] = None,
    text: Annotated[Path | None, typer.Option(
        "--text", help=_("UTF-8 text file to evaluate on. Default: chapters 1-2 of Pride and "
                         "Prejudice, which ship with Enclave."))] = None,
    tokens: Annotated[int, typer.Option(min=2, help=_("Tokens of the text to use."))] = 1024,
    window: Annotated[int, typer.Option(
        min=16, help=_("Tokens per evaluation window (context of each pass)."))]
    = DEFAULT_WINDOW,
    decode_tokens: Annotated[int, typer.Option(
        "--decode-tokens", min=1, help=_("Tokens generated to time decoding."))]
    = DEFAULT_DECODE_TOKENS,
    threads: Annotated[int | None, typer.Option(
        min=1, help=_("CPU threads. Default: all CPU cores."))] = None,
    torch_int8: Annotated[Path | None, typer.Option(
        "--torch-int8", help=_("Hugging Face folder of the reference model; adds PyTorch F32 "
                               "and dynamic INT8 rows (make one with 'enclave convert REF.gguf "
                               "DIR --format hf')."))] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help=_("Print the report as JSON."))] = False,
) -> None:
    """Compare quantized models with a reference: size, speed, perplexity, KL divergence and
    top-1 agreement on the same text."""
    setup_logging("warning")
    if text is not None:
        try:
            content = text.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(_("Cannot read {path}: {error}", path=text, error=exc),
                                     param_hint="--text") from None
        text_name = text.name
    else:
        content, text_name = default_text(), DEFAULT_TEXT_NAME

    extra: list[Callable[[], LogitSource]] = []
    if torch_int8 is not None:
        from enclave.quantize.torch_eval import TorchSource

        torch_threads = threads or len(os.sched_getaffinity(0))
        extra = [partial(TorchSource, torch_int8, torch_threads, False),
                 partial(TorchSource, torch_int8, torch_threads, True)]

    def announce(label: str) -> None:
        if not as_json:
            typer.echo(_("Evaluating {model} ...", model=label), err=True)

    report = evaluate(reference, list(candidates or []), content, text_name, tokens=tokens,
                      window=window, threads=threads, decode_tokens=decode_tokens,
                      extra_sources=extra, progress=announce)
    if as_json:
        typer.echo(json.dumps(report_to_dict(report), indent=2, ensure_ascii=False))
    else:
        typer.echo(render_report(report))

