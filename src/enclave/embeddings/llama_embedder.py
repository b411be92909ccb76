"""Sentence embeddings computed by llama.cpp from a GGUF embedding model.

One ``LlamaEmbedder`` owns one llama.cpp context. The context is not thread-safe, so every
call holds a lock; the service calls it from worker threads with ``asyncio.to_thread``.
Several inputs share one ``llama_encode`` call, each as its own sequence, until the batch
reaches ``batch_tokens`` tokens or ``max_sequences`` inputs.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from enclave.embeddings.convert import MAX_SEQ_LENGTH_KEY, WORD_START
from enclave.embeddings.wordpiece import WordPieceVocabulary
from enclave.engine import compute
from enclave.engine.llama_model import LlamaModel
from enclave.errors import EngineFailure, ModelLoadError

logger = logging.getLogger(__name__)

# llama.cpp (as bundled with llama-cpp-python 0.3.36) fails an assertion in the BERT graph
# when the micro-batch size is not a multiple of 64, so batch sizes are rounded up to one.
BATCH_TOKENS_MULTIPLE = 64

# Pooling types of llama.cpp that yield one vector per sequence.
_POOLING_NAMES = {
    llama_cpp.LLAMA_POOLING_TYPE_MEAN: "mean",
    llama_cpp.LLAMA_POOLING_TYPE_CLS: "cls",
    llama_cpp.LLAMA_POOLING_TYPE_LAST: "last",
}


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    """Facts about a loaded embedding model, as the API reports them."""

    path: Path
    architecture: str
    dimensions: int
    max_seq_length: int
    pooling: str
    size_bytes: int


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class LlamaEmbedder:
    """A GGUF embedding model in llama.cpp, with a tokenizer and a batched encoder."""

    def __init__(self, path: Path, *, threads: int, batch_tokens: int,
                 max_sequences: int = 64) -> None:
        self.model = LlamaModel(path)
        self._context: llama_cpp.llama_context_p | None = None
        # Any: llama-cpp-python's type hints declare llama_batch.pos as a nested array.
        self._batch: Any = None
        try:
            self._check_encoder()
            self.max_seq_length = self._max_seq_length(batch_tokens)
            self.batch_tokens = _round_up(max(batch_tokens, self.max_seq_length),
                                          BATCH_TOKENS_MULTIPLE)
            self.max_sequences = max_sequences
            self._context = self._create_context(threads)
            pooling = self._pooling_name(self._context)
            self._batch = llama_cpp.llama_batch_init(self.batch_tokens, 0, max_sequences)
        except Exception:
            self.close()
            raise

        self._lock = threading.Lock()
        self._wordpiece = self._read_wordpiece_vocabulary()
        self.info = EmbedderInfo(
            path=path,
            architecture=self.model.architecture,
            dimensions=self.model.n_embd,
            max_seq_length=self.max_seq_length,
            pooling=pooling,
            size_bytes=self.model.size_bytes,
        )

    def _check_encoder(self) -> None:
        # NOTE: decoder embedding models (Qwen3-Embedding and the like) need llama_decode,
        # a KV cache and last-token pooling; that path is untested, so they are rejected.
        architecture = self.model.architecture
        if self.model.metadata.get(f"{architecture}.attention.causal") != "false":
            raise ModelLoadError(
                f"{self.model.path} is a {architecture} model with causal attention, not an "
                "encoder embedding model. Set embeddings.model to a BERT-family embedding "
                "model (GGUF file or Hugging Face folder)."
            )

    def _max_seq_length(self, batch_tokens: int) -> int:
        """Return the token limit inputs are truncated to.

        That is the sentence-transformers limit stored by the converter, else the model's
        context length. A limit above batch_tokens is lowered to it, because the attention
        buffers grow with the square of the batch size.
        """
        declared = self.model.metadata.get(MAX_SEQ_LENGTH_KEY)
        limit = int(declared) if declared else self.model.n_ctx_train
        if self.model.n_ctx_train:
            limit = min(limit, self.model.n_ctx_train)
        if limit > batch_tokens:
            logger.warning(
                "Truncating embedding inputs to %d tokens (embeddings.batch_tokens) instead of "
                "the %d tokens %s can read; raise embeddings.batch_tokens to use them all",
                batch_tokens, limit, self.model.path.name,
            )
            limit = batch_tokens
        return limit

    def _create_context(self, threads: int) -> llama_cpp.llama_context_p:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.batch_tokens
        params.n_batch = self.batch_tokens
        # An encoder attends over a whole sequence at once, so a batch cannot be split into
        # smaller micro-batches.
        params.n_ubatch = self.batch_tokens
        params.n_seq_max = self.max_sequences
        params.n_threads = threads
        params.n_threads_batch = threads
        params.embeddings = True
        params.kv_unified = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        context: llama_cpp.llama_context_p = llama_cpp.llama_init_from_model(
            self.model.pointer, params
        )
        if not context:
            raise ModelLoadError(f"llama.cpp could not create an embedding context for "
                                 f"{self.model.path}; lower embeddings.batch_tokens.")
        return context

    def _pooling_name(self, context: llama_cpp.llama_context_p) -> str:
        pooling = llama_cpp.llama_pooling_type(context)
        name = _POOLING_NAMES.get(pooling)
        if name is None:
            raise ModelLoadError(
                f"{self.model.path} has pooling type {pooling}, which does not give one vector "
                "per input (a reranker or a token-level model). Choose a sentence-embedding "
                "model."
            )
        return name

    def _read_wordpiece_vocabulary(self) -> WordPieceVocabulary | None:
        """Return the vocabulary of a BERT (WordPiece) model; None for other tokenizers.

        llama.cpp's converter marks the first piece of a word with U+2581 and stores
        continuation pieces bare, so the ``##`` of BERT's vocabulary is implied.
        """
        vocab = self.model.vocab
        if llama_cpp.llama_vocab_type(vocab) != llama_cpp.LLAMA_VOCAB_TYPE_WPM:
            return None
        word_start: dict[str, int] = {}
        continuation: dict[str, int] = {}
        special: dict[str, int] = {}
        unk_id = -1
        for token_id in range(self.model.n_vocab):
            text = self.model.token_text(token_id)
            attributes = llama_cpp.llama_vocab_get_attr(vocab, token_id)
            if attributes & llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN:
                unk_id = token_id
            if attributes & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL |
                             llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN):
                special[text] = token_id
            elif text.startswith(WORD_START):
                word_start[text.removeprefix(WORD_START)] = token_id
            else:
                continuation[text] = token_id
        cls_id = int(llama_cpp.llama_vocab_bos(vocab))
        sep_id = int(llama_cpp.llama_vocab_sep(vocab))
        if min(unk_id, cls_id, sep_id) < 0:
            raise ModelLoadError(
                f"The WordPiece vocabulary of {self.model.path} lacks an unknown, CLS or SEP "
                f"token (ids {unk_id}, {cls_id}, {sep_id}); the file is not a BERT model."
            )
        return WordPieceVocabulary(
            word_start=word_start,
            continuation=continuation,
            special=special,
            unk_id=unk_id,
            cls_id=cls_id,
            sep_id=sep_id,
        )

    def tokenize(self, text: str) -> list[int]:
        """Return the tokens of one input with [CLS] and [SEP], before truncation."""
        if self._wordpiece is not None:
            return self._wordpiece.encode(text)
        return self.model.tokenize(text, add_special=True, parse_special=False)

    def truncate(self, tokens: list[int]) -> list[int]:
        """Cut tokens to the model's limit, keeping the closing [SEP] as sentence-transformers does.
        """
        if len(tokens) <= self.max_seq_length:
            return tokens
        return [*tokens[: self.max_seq_length - 1], tokens[-1]]

    def embed_tokens(self, inputs: list[list[int]]) -> npt.NDArray[np.float32]:
        """Return one L2-normalised vector per token list, in input order.

        Each list must fit max_seq_length (see truncate()); a longer one would overflow the
        llama.cpp batch, so it raises ValueError.
        """
        for index, tokens in enumerate(inputs):
            if not 0 < len(tokens) <= self.max_seq_length:
                raise ValueError(f"input {index} has {len(tokens)} tokens; 1 to "
                                 f"{self.max_seq_length} are allowed")
        vectors = np.empty((len(inputs), self.info.dimensions), dtype=np.float32)
        with self._lock:
            if self._context is None or self._batch is None:
                raise EngineFailure(f"The embedding model {self.model.path.name} was closed.")
            start = 0
            while start < len(inputs):
                end = self._batch_end(inputs, start)
                vectors[start:end] = self._encode(self._context, self._batch, inputs[start:end])
                start = end
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: npt.NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)
        return normalised

    def _batch_end(self, inputs: list[list[int]], start: int) -> int:
        total = 0
        end = start
        while end < len(inputs) and end - start < self.max_sequences:
            if total + len(inputs[end]) > self.batch_tokens and end > start:
                break
            total += len(inputs[end])
            end += 1
        return end

    def _encode(self, context: llama_cpp.llama_context_p, batch: Any,
                inputs: list[list[int]]) -> npt.NDArray[np.float32]:
        index = 0
        for sequence, tokens in enumerate(inputs):
            for position, token in enumerate(tokens):
                batch.token[index] = token
                batch.pos[index] = position
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = sequence
                batch.logits[index] = True
                index += 1
        batch.n_tokens = index

        status = compute.run(llama_cpp.llama_encode, context, batch)
        if status != 0:
            raise EngineFailure(f"llama_encode returned {status} for {len(inputs)} inputs "
                                f"of {index} tokens")
        result = np.empty((len(inputs), self.info.dimensions), dtype=np.float32)
        for sequence in range(len(inputs)):
            pointer = llama_cpp.llama_get_embeddings_seq(context, sequence)
            if not pointer:
                raise EngineFailure(f"llama.cpp returned no embedding for sequence {sequence}")
            result[sequence] = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                shape=(self.info.dimensions,),
            )
        return result

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._context is not None:
            llama_cpp.llama_free(self._context)
            self._context = None
        self.model.close()
