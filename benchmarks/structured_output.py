"""Constrained decoding: decode tokens/s with and without a grammar, in process.

Three samplers on the same model, prompt and seeds (temperature 1.0, one sequence at a time):

1. no grammar;
2. the grammar first in the llama.cpp sampler chain, so it filters the whole vocabulary
   for every token (how Enclave sampled before, and the plain llama.cpp chain);
3. Enclave's SamplerChain: sample without the grammar, check the chosen token, and resample
   from the most likely tokens only when the grammar rejects it.

Workloads: a JSON schema with bounded fields, and any JSON object. The rate is decode
tokens/s from the engine's own timings (prefill excluded), summed over all requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import llama_cpp

from benchmarks.common import markdown_table, write_results
from enclave.config import EngineSettings
from enclave.engine import scheduler as scheduler_module
from enclave.engine.grammar import json_object_grammar, json_schema_grammar
from enclave.engine.llama_engine import LlamaEngine
from enclave.engine.sampling import SamplerChain, SamplingParams
from enclave.engine.types import Finished, GenerationRequest, TextDelta
from enclave.models.embedded import default_chat_model

SEEDS = range(8)
MAX_TOKENS = 160
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"type": "string", "maxLength": 30},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "tags"],
}
PROMPT = [{"role": "user", "content": "Describe a person called Ana as JSON."}]


class GrammarFirstChain(SamplerChain):
    """The grammar as the first stage of one llama.cpp chain, sampled with one call."""

    def __init__(self, params: SamplingParams, vocab: llama_cpp.llama_vocab_p) -> None:
        super().__init__(params, vocab)
        if self.grammar is not None:
            # Rebuild the chain with the grammar in front of the other stages.
            grammar, self.grammar = self.grammar, None
            llama_cpp.llama_sampler_free(self.pointer)
            chain_params = llama_cpp.llama_sampler_chain_default_params()
            chain_params.no_perf = True
            self.pointer = llama_cpp.llama_sampler_chain_init(chain_params)
            llama_cpp.llama_sampler_chain_add(self.pointer, grammar)
            self._add_stages(params, vocab)


async def run_one(engine: LlamaEngine, grammar: str | None, seed: int) -> Finished:
    prompt_tokens = engine.tokenize_prompt(engine.render_prompt(PROMPT))
    request = GenerationRequest(
        request_id=f"bench-{seed}", prompt_tokens=prompt_tokens,
        params=SamplingParams(temperature=1.0, seed=seed, grammar=grammar),
        max_tokens=MAX_TOKENS,
    )
    finished: Finished | None = None
    text = []
    async for event in engine.submit(request):
        if isinstance(event, TextDelta):
            text.append(event.text)
        else:
            finished = event
    assert finished is not None
    if grammar is not None and finished.reason == "stop":
        json.loads("".join(text))  # a constrained answer that ended must parse
    return finished


MODES: list[tuple[str, str, type[SamplerChain]]] = [
    ("no grammar", "free text", SamplerChain),
    ("grammar first", "json schema", GrammarFirstChain),
    ("sample, then check", "json schema", SamplerChain),
    ("grammar first", "json object", GrammarFirstChain),
    ("sample, then check", "json object", SamplerChain),
]


async def run_all() -> list[dict[str, Any]]:
    """Run every mode once per seed, interleaved, so load changes on the machine hit all."""
    grammars = {"free text": None,
                "json schema": json_schema_grammar(PERSON, param="benchmark"),
                "json object": json_object_grammar()}
    totals = {(sampler, workload): [0, 0.0] for sampler, workload, _ in MODES}
    engine = await asyncio.to_thread(LlamaEngine.load, "bench", default_chat_model(),
                                     EngineSettings(parallel=1, context_size=2048))
    try:
        for seed in SEEDS:
            for sampler, workload, chain_class in MODES:
                # The scheduler builds each request's sampler when it admits the request.
                scheduler_module.SamplerChain = chain_class  # type: ignore[attr-defined]
                finished = await run_one(engine, grammars[workload], seed)
                # The first token comes out of prefill, so decoding produced the rest.
                totals[(sampler, workload)][0] += finished.completion_tokens - 1
                totals[(sampler, workload)][1] += finished.timings.decode_ms
    finally:
        scheduler_module.SamplerChain = SamplerChain  # type: ignore[attr-defined]
        engine.close()
    rows = []
    for (sampler, workload), (tokens, decode_ms) in totals.items():
        rows.append({"sampler": sampler, "workload": workload, "tokens": int(tokens),
                     "decode_ms": round(decode_ms, 1),
                     "tokens_per_s": round(tokens / (decode_ms / 1000.0), 1)})
    return rows


def main() -> None:
    started = time.perf_counter()
    rows = asyncio.run(run_all())
    headers = ["sampler", "workload", "decode tokens/s", "tokens", "decode ms"]
    table = markdown_table(headers, [[row["sampler"], row["workload"], row["tokens_per_s"],
                                      row["tokens"], row["decode_ms"]] for row in rows])
    markdown = (
        "# Constrained decoding\n\n"
        f"SmolLM2-135M-Instruct Q4_1, one sequence, temperature 1.0, {len(SEEDS)} seeds, at "
        f"most {MAX_TOKENS} tokens each. Decode rate from the engine's timings "
        "(`python -m benchmarks structured_output`).\n\n" + table
    )
    path = write_results("structured_output", {"rows": rows, "seconds":
                                               round(time.perf_counter() - started, 1)},
                         markdown)
    print(markdown)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
