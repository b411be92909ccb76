"""Quantization benchmark: what each GGUF type and PyTorch dynamic INT8 cost the embedded model.

Steps, with working files under benchmarks/results/quantization/ (git-ignored):

1. convert the embedded SmolLM2-135M-Instruct Q4_1 to F32 (the reference: the exact weights
   the shipped file computes with) and to F16;
2. quantize the F32 reference to Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M and Q2_K with
   llama.cpp's quantizer;
3. export the reference as a Hugging Face folder for the PyTorch rows;
4. run ``enclave eval-quant``'s evaluation on 2,048 tokens of the built-in text: every GGUF
   above plus the shipped Q4_1, then PyTorch F32 and PyTorch dynamic INT8.

Usage: ``python -m benchmarks quantization`` (about five minutes).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from benchmarks.common import RESULTS_DIR, markdown_table, write_results
from enclave.models.embedded import default_chat_model
from enclave.quantize.convert import dequantize_gguf
from enclave.quantize.evaluate import evaluate, report_to_dict
from enclave.quantize.hf_export import export_hf
from enclave.quantize.quantizer import quantize_gguf
from enclave.quantize.text import DEFAULT_TEXT_NAME, default_text
from enclave.quantize.torch_eval import TorchSource

TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
TOKENS = 2048
# One thread per model: llama.cpp's and PyTorch's worker threads spin while they wait for
# each other, so on a small shared machine two threads make the speed columns erratic.
THREADS = 1
MIB = 1024 * 1024


def prepare(workdir: Path) -> tuple[Path, list[Path], Path]:
    """Write the reference, the candidates and the Hugging Face folder; return their paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    shipped = default_chat_model()
    reference = workdir / "smollm2-F32.gguf"
    dequantize_gguf(shipped, reference, "f32")
    candidates = [workdir / "smollm2-F16.gguf"]
    dequantize_gguf(shipped, candidates[0], "f16")
    for type_name in TYPES:
        destination = workdir / f"smollm2-{type_name}.gguf"
        quantize_gguf(reference, destination, type_name)
        candidates.append(destination)
    candidates.append(shipped)
    folder = workdir / "smollm2-hf"
    export_hf(reference, folder)
    return reference, candidates, folder


def main() -> None:
    workdir = RESULTS_DIR / "quantization"
    reference, candidates, folder = prepare(workdir)
    threads = THREADS
    report = evaluate(
        reference, candidates, default_text(), DEFAULT_TEXT_NAME, tokens=TOKENS,
        threads=threads,
        extra_sources=[partial(TorchSource, folder, threads, False),
                       partial(TorchSource, folder, threads, True)],
        progress=lambda label: print(f"  evaluating {label}", flush=True),
    )

    rows = [[row.type_name + (" (reference)" if row.is_reference else ""),
             f"{row.size_bytes / MIB:.1f}", f"{row.size_ratio:.1%}",
             f"{row.prefill_tokens_s:.0f}", f"{row.decode_tokens_s:.1f}",
             f"{row.perplexity:.3f}", f"{row.delta_ppl_percent:+.2f}%", f"{row.mean_kld:.5f}",
             f"{row.top1_agreement:.1%}"] for row in report.rows]
    markdown = (
        f"# Quantization of {default_chat_model().name}\n\nReference: F32 converted from the "
        f"shipped Q4_1. {report.tokens} tokens of {report.text_name}, windows of "
        f"{report.window} ({report.scored_positions} scored positions), threads: {threads}.\n\n"
        + markdown_table(["type", "size MiB", "vs F32", "prefill tok/s", "decode tok/s", "PPL",
                          "delta PPL", "KLD", "top-1"], rows)
    )
    output = write_results("quantization", report_to_dict(report), markdown)
    print(f"  results in {output}")


if __name__ == "__main__":
    main()
