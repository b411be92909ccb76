"""Serving benchmark: raw llama.cpp decode against the HTTP server, in one run.

Rows, all on the same model and thread count, greedy sampling, end-of-generation tokens
banned through logit_bias so every answer has the same length:

1. raw decode through llama-cpp-python's low-level API: batch of 1 and batch of 8 sequences;
   and llama-cpp-python's high-level ``Llama.create_completion`` streaming the same prompt;
2. the server, one streaming client: decode tokens/s and time to first token;
3. the server, 8 concurrent streaming clients: aggregate tokens/s, TTFT p50/p95;
4. time to first token of a request that repeats a 1,000-token system prompt, against the
   first request that had to prefill it.

The server runs as a subprocess (``enclave serve``); clients stream over loopback sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import llama_cpp
from tests.server import DEFAULT_MODEL, running_server

from benchmarks.common import markdown_table, write_results
from enclave.engine.llama_engine import available_cpus
from enclave.engine.llama_model import LlamaModel, repack_by_default
from enclave.models.embedded import default_chat_model

PROMPT = "Write a detailed essay about the history of the printing press in Europe."
SYSTEM_PARAGRAPH = (
    "You are the assistant of a regional bank's compliance team. Answer questions about "
    "internal policies precisely, cite the policy section you rely on, and say when a "
    "question falls outside the policies you were given. "
)
SYSTEM_REPEATS = 25
CONTENT = b'"content":"'
EMPTY_CONTENT = b'"content":""'


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# Raw llama.cpp, called directly.


FLASH_ATTENTION = {"off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
                   "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED}


def raw_decode_rate(model: LlamaModel, sequences: int, tokens: int, threads: int,
                    flash_attention: str = "off") -> float:
    """Return tokens/s of greedy decoding ``sequences`` streams in one batch each step."""
    # The context the server creates: 4,096 cells per sequence, one KV buffer per sequence,
    # and the same flash attention setting (off by default on the CPU).
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 4096 * sequences
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_seq_max = sequences
    params.n_threads = threads
    params.n_threads_batch = threads
    params.kv_unified = False
    params.flash_attn_type = FLASH_ATTENTION[flash_attention]
    context = llama_cpp.llama_init_from_model(model.pointer, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    samplers = [_greedy_without_eog(model) for _ in range(sequences)]
    try:
        prompt = model.tokenize(PROMPT, add_special=True, parse_special=False)
        for seq in range(sequences):
            _fill_prompt(batch, prompt, seq)
            assert llama_cpp.llama_decode(context, batch) == 0
        next_tokens = [samplers[s].sample(context, len(prompt) - 1) for s in range(sequences)]
        position = len(prompt)
        started = time.perf_counter()
        for _ in range(tokens):
            batch.n_tokens = sequences
            for seq in range(sequences):
                batch.token[seq] = next_tokens[seq]
                batch.pos[seq] = position
                batch.n_seq_id[seq] = 1
                batch.seq_id[seq][0] = seq
                batch.logits[seq] = True
            assert llama_cpp.llama_decode(context, batch) == 0
            next_tokens = [samplers[s].sample(context, s) for s in range(sequences)]
            position += 1
        return sequences * tokens / (time.perf_counter() - started)
    finally:
        for sampler in samplers:
            sampler.close()
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(context)


def _fill_prompt(batch: Any, tokens: list[int], seq: int) -> None:
    batch.n_tokens = len(tokens)
    for index, token in enumerate(tokens):
        batch.token[index] = token
        batch.pos[index] = index
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq
        batch.logits[index] = index == len(tokens) - 1


def _eog_tokens(model: LlamaModel) -> list[int]:
    return [token for token in range(model.n_vocab) if model.is_end_of_generation(token)]


def _greedy_without_eog(model: LlamaModel) -> Any:
    from enclave.engine.sampling import SamplerChain, SamplingParams

    bias = {token: -1e9 for token in _eog_tokens(model)}
    return SamplerChain(SamplingParams(temperature=0.0, logit_bias=bias), model.vocab)


@contextmanager
def engine_repacking() -> Iterator[None]:
    """Make Llama() repack weights as Enclave's engine does; Llama() has no such option."""
    # Llama() calls the function through the bindings module, not the package.
    bindings = llama_cpp.llama_cpp
    default_params = bindings.llama_model_default_params
    repack = repack_by_default()

    def params() -> Any:
        values = default_params()
        values.use_extra_bufts = repack
        return values

    bindings.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_model_default_params = default_params


def high_level_rate(path: Path, tokens: int, threads: int, flash_attention: str) -> float:
    """Return tokens/s of llama-cpp-python's own Llama.create_completion, streamed."""
    with engine_repacking():
        llama = llama_cpp.Llama(str(path), n_ctx=4096, n_threads=threads,
                                n_threads_batch=threads, flash_attn=flash_attention == "on",
                                verbose=False)
    try:
        eog = {str(token): -100.0 for token in range(llama.n_vocab())
               if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llama.model),
                                               token)}
        stamps = []
        for _ in llama.create_completion(PROMPT, max_tokens=tokens, temperature=0.0,
                                         stream=True, logit_bias=eog):
            stamps.append(time.perf_counter())
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])
    finally:
        llama.close()


# The server, through HTTP.


async def stream_once(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Stream one chat completion; return TTFT, decode rate and tokens seen by the client.

    A bare asyncio socket client rather than httpx: the client shares the machine's two
    cores with the server, and it should take as little of them as it can. Each content
    delta counts as one token (deltas carry one token each).
    """
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
               "Connection: close\r\n\r\n").encode() + payload
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    stamps: list[float] = []
    pending = b""
    while chunk := await reader.read(65536):
        now = time.perf_counter()
        *events, pending = (pending + chunk).split(b"\n\n")
        stamps.extend(now for event in events
                      if CONTENT in event and EMPTY_CONTENT not in event)
    writer.close()
    await writer.wait_closed()
    decode_s = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    return {
        "ttft_s": stamps[0] - started if stamps else float("nan"),
        "tokens": len(stamps),
        "decode_tokens_per_s": (len(stamps) - 1) / decode_s if decode_s else 0.0,
        "first": stamps[0] if stamps else started,
        "last": stamps[-1] if stamps else started,
    }


def chat_body(content: str, tokens: int, eog_bias: dict[str, float],
              system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return {"model": DEFAULT_MODEL, "messages": messages, "stream": True, "temperature": 0,
            "max_tokens": tokens, "logit_bias": eog_bias}


async def server_rows(base_url: str, tokens: int, eog_bias: dict[str, float],
                      repeats: int) -> dict[str, Any]:
    await stream_once(base_url, chat_body("Hello", 8, eog_bias))  # warm-up

    singles = [await stream_once(base_url, chat_body(f"{PROMPT} ({index})", tokens, eog_bias))
               for index in range(repeats)]

    concurrent = []
    for round_index in range(repeats):
        started = time.perf_counter()
        results = await asyncio.gather(*[
            stream_once(base_url, chat_body(f"{PROMPT} Variant {round_index}-{index}.", tokens,
                                            eog_bias))
            for index in range(8)
        ])
        elapsed = max(r["last"] for r in results) - started
        concurrent.append({
            "aggregate_tokens_per_s": sum(r["tokens"] for r in results) / elapsed,
            "ttfts": [r["ttft_s"] for r in results],
        })

    system = SYSTEM_PARAGRAPH * SYSTEM_REPEATS  # about 1,000 tokens
    prefix_first = await stream_once(base_url, chat_body("What is policy 4.2?", 4, eog_bias,
                                                         system))
    prefix_second = await stream_once(base_url, chat_body("Who approves loans?", 4, eog_bias,
                                                          system))
    ttfts = [t for round_ in concurrent for t in round_["ttfts"]]
    return {
        "single_decode_tokens_per_s": statistics.median(s["decode_tokens_per_s"] for s in singles),
        "single_ttft_s": statistics.median(s["ttft_s"] for s in singles),
        "concurrent_aggregate_tokens_per_s": statistics.median(
            r["aggregate_tokens_per_s"] for r in concurrent),
        "concurrent_ttft_p50_s": percentile(ttfts, 0.5),
        "concurrent_ttft_p95_s": percentile(ttfts, 0.95),
        "prefix_first_ttft_s": prefix_first["ttft_s"],
        "prefix_second_ttft_s": prefix_second["ttft_s"],
    }


def raw_rates(model: LlamaModel, args: argparse.Namespace, flash: str) -> tuple[float, float]:
    """Return the median raw decode rates of batch 1 and batch 8."""
    batch_1 = statistics.median(raw_decode_rate(model, 1, args.tokens, args.threads, flash)
                                for _ in range(args.repeats))
    batch_8 = statistics.median(raw_decode_rate(model, 8, args.tokens, args.threads, flash)
                                for _ in range(args.repeats))
    return batch_1, batch_8


def system_prompt_tokens(model: LlamaModel) -> int:
    text = SYSTEM_PARAGRAPH * SYSTEM_REPEATS
    return len(model.tokenize(text, add_special=False, parse_special=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens generated per stream")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each server row")
    parser.add_argument("--threads", type=int, default=available_cpus())
    parser.add_argument("--flash-attention", choices=["off", "on"], default="off",
                        help="off is the server's default on the CPU (reproducible answers)")
    args = parser.parse_args(argv if argv is not None else [])

    load_before = os.getloadavg()[0]
    path = default_chat_model()
    model = LlamaModel(path)
    flash = args.flash_attention
    # Raw rates are measured before and after the server rows and averaged, so a slower or
    # faster phase of this shared machine does not land on one side of the comparison only.
    before = raw_rates(model, args, flash)
    high_level = high_level_rate(path, args.tokens, args.threads, flash)
    eog_bias = {str(token): -100.0 for token in _eog_tokens(model)}
    prefix_tokens = system_prompt_tokens(model)

    with tempfile.TemporaryDirectory() as tmp, running_server(
        Path(tmp), "--parallel", "8",
        env={"ENCLAVE_ENGINE__THREADS": str(args.threads), "ENCLAVE_SERVER__LOG_LEVEL": "warning",
             "ENCLAVE_ENGINE__FLASH_ATTENTION": flash},
    ) as server:
        served = asyncio.run(server_rows(server.base_url, args.tokens, eog_bias, args.repeats))

    after = raw_rates(model, args, flash)
    model.close()
    raw_1 = (before[0] + after[0]) / 2
    raw_8 = (before[1] + after[1]) / 2

    load_after = os.getloadavg()[0]
    results = {
        "load_average_before": round(load_before, 2),
        "load_average_after": round(load_after, 2),
        "model": DEFAULT_MODEL,
        "threads": args.threads,
        "flash_attention": flash,
        "tokens_per_stream": args.tokens,
        "raw_batch1_tokens_per_s": raw_1,
        "raw_batch8_tokens_per_s": raw_8,
        "high_level_llama_cpp_python_tokens_per_s": high_level,
        "system_prompt_tokens": prefix_tokens,
        **served,
    }
    ratios = {
        "single_vs_raw_batch1": served["single_decode_tokens_per_s"] / raw_1,
        "concurrent_vs_raw_batch8": served["concurrent_aggregate_tokens_per_s"] / raw_8,
        "concurrent_vs_single": served["concurrent_aggregate_tokens_per_s"]
        / served["single_decode_tokens_per_s"],
        "prefix_second_vs_first_ttft": served["prefix_second_ttft_s"]
        / served["prefix_first_ttft_s"],
    }
    rows = [
        ["raw llama.cpp decode, batch 1", f"{raw_1:.1f} tok/s", ""],
        ["raw llama.cpp decode, batch 8", f"{raw_8:.1f} tok/s (aggregate)",
         f"{raw_8 / raw_1:.2f}x batch 1"],
        ["llama-cpp-python Llama.create_completion, streamed", f"{high_level:.1f} tok/s", ""],
        ["server, 1 stream: decode", f"{served['single_decode_tokens_per_s']:.1f} tok/s",
         f"{ratios['single_vs_raw_batch1']:.0%} of raw batch 1 (target >= 90%)"],
        ["server, 1 stream: TTFT", f"{served['single_ttft_s'] * 1000:.0f} ms", ""],
        ["server, 8 streams: aggregate",
         f"{served['concurrent_aggregate_tokens_per_s']:.1f} tok/s",
         f"{ratios['concurrent_vs_raw_batch8']:.0%} of raw batch 8 (target >= 85%); "
         f"{ratios['concurrent_vs_single']:.2f}x single stream (target >= 1.6x)"],
        ["server, 8 streams: TTFT p50 / p95",
         f"{served['concurrent_ttft_p50_s'] * 1000:.0f} / "
         f"{served['concurrent_ttft_p95_s'] * 1000:.0f} ms", ""],
        [f"{prefix_tokens}-token system prompt: TTFT first / repeated",
         f"{served['prefix_first_ttft_s'] * 1000:.0f} / "
         f"{served['prefix_second_ttft_s'] * 1000:.0f} ms",
         f"{ratios['prefix_second_vs_first_ttft']:.0%} (target <= 25%)"],
    ]
    markdown = (f"Serving benchmark: {DEFAULT_MODEL}, {args.threads} threads, flash attention "
                f"{flash}, {args.tokens} tokens per stream, greedy, median of {args.repeats}. "
                f"Load average (1 min) {load_before:.2f} before, {load_after:.2f} after; raw "
                "rates are the mean of a run before and one after the server rows.\n\n"
                + markdown_table(["measure", "value", "against target"], rows))
    name = "serving" if flash == "off" else f"serving-flash-{flash}"
    path_md = write_results(name, {"results": results, "ratios": ratios}, markdown)
    print(markdown)
    print(f"written to {path_md}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
