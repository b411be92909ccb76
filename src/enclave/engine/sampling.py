"""Sampling parameters of one request and the llama.cpp sampler chain built from them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import llama_cpp

from enclave.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How the next token is chosen, per request. Temperature 0 means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    grammar: str | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)

    def resolved_seed(self) -> int:
        """Return the request's seed, or a fresh random one when it set none."""
        return self.seed if self.seed is not None else random.getrandbits(32)


class SamplerChain:
    """A llama.cpp sampler chain owned by one sequence; free it with close()."""

    def __init__(self, params: SamplingParams, vocab: llama_cpp.llama_vocab_p) -> None:
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.pointer = llama_cpp.llama_sampler_chain_init(chain_params)
        try:
            self._add_stages(params, vocab)
        except Exception:
            self.close()
            raise

    def _add(self, sampler: llama_cpp.llama_sampler_p | None, what: str) -> None:
        if not sampler:
            raise InvalidRequestError(f"Could not build the {what} sampler; check its value.")
        llama_cpp.llama_sampler_chain_add(self.pointer, sampler)

    def _add_stages(self, params: SamplingParams, vocab: llama_cpp.llama_vocab_p) -> None:
        if params.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                raise InvalidRequestError(
                    "The grammar for the requested output format could not be parsed.",
                    param="response_format",
                )
            llama_cpp.llama_sampler_chain_add(self.pointer, grammar)

        if params.logit_bias:
            self._add_logit_bias(params.logit_bias, vocab)

        penalised = (
            params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0
            or params.repeat_penalty != 1.0
        )
        if penalised:
            self._add(
                llama_cpp.llama_sampler_init_penalties(
                    params.repeat_last_n,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                ),
                "penalties",
            )

        if params.temperature <= 0.0:
            self._add(llama_cpp.llama_sampler_init_greedy(), "greedy")
            return

        if params.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(params.top_k), "top_k")
        if params.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1), "top_p")
        if params.min_p > 0.0:
            self._add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1), "min_p")
        self._add(llama_cpp.llama_sampler_init_temp(params.temperature), "temperature")
        self._add(llama_cpp.llama_sampler_init_dist(params.resolved_seed()), "seeded")

    def _add_logit_bias(self, bias: dict[int, float], vocab: llama_cpp.llama_vocab_p) -> None:
        entries = (llama_cpp.llama_logit_bias * len(bias))()
        for index, (token, value) in enumerate(bias.items()):
            entries[index].token = token  # type: ignore[assignment]
            entries[index].bias = value
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._add(
            llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), entries), "logit_bias"
        )

    def sample(self, context: llama_cpp.llama_context_p, output_index: int) -> int:
        """Choose the next token from the logits of one batch row, and accept it."""
        return int(llama_cpp.llama_sampler_sample(self.pointer, context, output_index))

    def close(self) -> None:
        if self.pointer:
            llama_cpp.llama_sampler_free(self.pointer)
            self.pointer = None
