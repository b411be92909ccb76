"""Sampling parameters of one request and the llama.cpp sampler chain built from them."""

from __future__ import annotations

import ctypes
import random
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
import numpy.typing as npt

from enclave.engine.grammar import check_grammar_nesting
from enclave.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling settings of one request; temperature 0 means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    # GBNF text whose rule "root" every generated token must follow.
    grammar: str | None = None
    # With triggers the grammar is lazy: output is free until one of these regular expressions
    # matches the generated text, and the grammar constrains the text from the match onwards.
    grammar_triggers: tuple[str, ...] = ()
    logit_bias: dict[int, float] = field(default_factory=dict)

    def resolved_seed(self) -> int:
        """Return the request's seed, or a fresh random one when it set none."""
        return self.seed if self.seed is not None else random.getrandbits(32)


class SamplerChain:
    """A llama.cpp sampler chain owned by one sequence; free it with close().

    A grammar is kept out of the chain. Applying a grammar to every token of the vocabulary
    costs more than the rest of the chain together, so sample() first picks a token without
    it and asks the grammar about that one token, as llama.cpp's common_sampler_sample does.
    When the grammar rejects it, the grammar filters the RESAMPLE_CANDIDATES most likely
    tokens and the chain samples again from those it allows; only if it allows none of them
    is the whole vocabulary filtered. For greedy and plain temperature sampling this matches
    a chain with the grammar first, except that tokens outside the most likely ones are not
    picked on a resample. top_k, top_p and min_p cut the candidates before the grammar sees
    them instead of after, which can shift the distribution slightly.
    """

    def __init__(self, params: SamplingParams, vocab: llama_cpp.llama_vocab_p) -> None:
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.pointer = llama_cpp.llama_sampler_chain_init(chain_params)
        self.grammar: llama_cpp.llama_sampler_p | None = None
        self._candidates: _Candidates | None = None
        try:
            if params.grammar:
                self.grammar = _init_grammar(params, vocab)
                self._candidates = _Candidates(int(llama_cpp.llama_vocab_n_tokens(vocab)))
            self._add_stages(params, vocab)
        except Exception:
            self.close()
            raise

    def _add(self, sampler: llama_cpp.llama_sampler_p | None, what: str) -> None:
        if not sampler:
            raise InvalidRequestError(f"Could not build the {what} sampler; check its value.")
        llama_cpp.llama_sampler_chain_add(self.pointer, sampler)

    def _add_stages(self, params: SamplingParams, vocab: llama_cpp.llama_vocab_p) -> None:
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
                    llama_cpp.llama_vocab_n_tokens(vocab),
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
        if self.grammar is None:
            return int(llama_cpp.llama_sampler_sample(self.pointer, context, output_index))

        assert self._candidates is not None
        logits = llama_cpp.llama_get_logits_ith(context, output_index)
        candidates = self._candidates
        candidates.load(logits)
        llama_cpp.llama_sampler_apply(self.pointer, candidates.ref)
        token = candidates.selected()

        if not self._grammar_allows(token):
            token = self._resample(candidates, logits)

        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.pointer, token)
        return token

    def _resample(self, candidates: _Candidates, logits: ctypes._Pointer[ctypes.c_float]) -> int:
        if candidates.load_most_likely(logits, RESAMPLE_CANDIDATES):
            llama_cpp.llama_sampler_apply(self.grammar, candidates.ref)
            if candidates.any_allowed():
                llama_cpp.llama_sampler_apply(self.pointer, candidates.ref)
                return candidates.selected()
        candidates.load(logits)
        llama_cpp.llama_sampler_apply(self.grammar, candidates.ref)
        llama_cpp.llama_sampler_apply(self.pointer, candidates.ref)
        return candidates.selected()

    def _grammar_allows(self, token: int) -> bool:
        single = llama_cpp.llama_token_data(token, 0.0, 0.0)
        array = llama_cpp.llama_token_data_array(ctypes.pointer(single), 1, -1, False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return bool(np.isfinite(single.logit))

    def close(self) -> None:
        if self.pointer:
            llama_cpp.llama_sampler_free(self.pointer)
            self.pointer = None
        if self.grammar:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None


def _init_grammar(
    params: SamplingParams, vocab: llama_cpp.llama_vocab_p
) -> llama_cpp.llama_sampler_p:
    assert params.grammar is not None
    check_grammar_nesting(params.grammar, param="response_format")
    text = params.grammar.encode("utf-8")
    grammar: llama_cpp.llama_sampler_p
    if params.grammar_triggers:
        patterns = (ctypes.c_char_p * len(params.grammar_triggers))(
            *(pattern.encode("utf-8") for pattern in params.grammar_triggers)
        )
        grammar = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, text, b"root", patterns, len(params.grammar_triggers), None, 0
        )
    else:
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, text, b"root")
    if not grammar:
        raise InvalidRequestError(
            "The grammar for the requested output format could not be parsed.",
            param="response_format",
        )
    return grammar


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
# Tokens the grammar checks first when it rejects the token sampled without it.
RESAMPLE_CANDIDATES = 256


class _Candidates:
    """A reusable llama_token_data_array over the whole vocabulary, filled with numpy."""

    def __init__(self, n_vocab: int) -> None:
        assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self._n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._data: npt.NDArray[np.void] = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        pointer = self._data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        self._array = llama_cpp.llama_token_data_array(pointer, n_vocab, -1, False)
        self.ref = ctypes.byref(self._array)

    def load(self, logits: ctypes._Pointer[ctypes.c_float]) -> None:
        """Reset the array to every token with its logit, as llama_sampler_sample does."""
        self._data["id"] = self._ids
        self._data["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        self._data["p"] = 0.0
        self._array.size = self._n_vocab
        self._array.selected = -1
        self._array.sorted = False

    def load_most_likely(self, logits: ctypes._Pointer[ctypes.c_float], count: int) -> bool:
        """Fill the array with the ``count`` tokens of highest logit; False if the vocabulary
        is not larger than that."""
        if count >= self._n_vocab:
            return False
        values = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        top = np.argpartition(values, self._n_vocab - count)[self._n_vocab - count :]
        self._data["id"][:count] = top
        self._data["logit"][:count] = values[top]
        self._data["p"][:count] = 0.0
        self._array.size = count
        self._array.selected = -1
        self._array.sorted = False
        return True

    def any_allowed(self) -> bool:
        """Return whether a grammar left any candidate with a finite logit."""
        return bool(np.isfinite(self._data["logit"][: self._array.size]).any())

    def selected(self) -> int:
        # Every chain ends in a selecting sampler (greedy or dist), so the index is set; the
        # guard keeps a broken chain from taking the scheduler thread down with an IndexError.
        index = max(0, int(self._array.selected))
        # Samplers may have reordered the data in place, so read the id at the index.
        return int(self._data["id"][index])
