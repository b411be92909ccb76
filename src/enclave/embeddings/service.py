"""The embedding service that the OpenAI, Ollama and rerank endpoints call.

One model instance serves every request. Its work runs in a worker thread, one request at a
time, so a long batch never blocks the event loop. The model is loaded in the background
from start-up on, and requests that arrive earlier wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from enclave.embeddings.llama_embedder import EmbedderInfo, LlamaEmbedder
from enclave.embeddings.settings import EmbeddingsSettings
from enclave.embeddings.source import EmbeddingModelSource, prepare_gguf, resolve_source
from enclave.errors import EnclaveError, EngineUnavailableError, InvalidRequestError

logger = logging.getLogger(__name__)

RERANK_SUFFIX = "-cosine-rerank"


@dataclass(frozen=True)
class EmbeddingResult:
    """One L2-normalised vector per input, in input order, and the tokens encoded."""

    array: npt.NDArray[np.float32]
    prompt_tokens: int

    @property
    def vectors(self) -> list[list[float]]:
        result: list[list[float]] = self.array.tolist()
        return result


@dataclass(frozen=True)
class RerankResult:
    """One relevance score in [0, 1] per document, in document order."""

    scores: list[float]
    prompt_tokens: int


class EmbeddingService:
    """Loads the embedding model once and embeds texts for every API."""

    def __init__(self, settings: EmbeddingsSettings, cache_dir: Path) -> None:
        self.settings = settings
        self.source: EmbeddingModelSource = resolve_source(settings.model)
        self.cache_dir = cache_dir
        self._embedder: LlamaEmbedder | None = None
        self._loading: asyncio.Task[LlamaEmbedder] | None = None
        self._lock = asyncio.Lock()
        self._requests_total = 0
        self._inputs_total = 0
        self._tokens_total = 0
        self._encode_seconds_total = 0.0

    @property
    def model_id(self) -> str:
        return self.source.model_id

    @property
    def rerank_model_id(self) -> str:
        """Return the id of the rerank model, which names the embedding model it runs on."""
        return self.model_id + RERANK_SUFFIX

    @property
    def created(self) -> int:
        """Return the Unix time of the model files, the "created" field of /v1/models."""
        return int(self.source.location.stat().st_mtime)

    def model_ids(self) -> list[str]:
        """Return the ids this service serves: the embedding model, then the rerank model."""
        return [self.model_id, self.rerank_model_id]

    def start(self) -> None:
        """Start loading the model in the background; call once from the event loop."""
        if self._loading is None:
            self._loading = asyncio.create_task(asyncio.to_thread(self._load))

    async def wait_loaded(self) -> LlamaEmbedder:
        """Return the loaded model, waiting for the background load; raise its error as is."""
        self.start()
        assert self._loading is not None
        return await asyncio.shield(self._loading)

    async def model_info(self) -> EmbedderInfo:
        """Return the loaded model's facts; raise EngineUnavailableError if loading failed."""
        return (await self._embedder_for_request()).info

    async def _embedder_for_request(self) -> LlamaEmbedder:
        try:
            return await self.wait_loaded()
        except EnclaveError as exc:
            raise EngineUnavailableError(
                f"The embedding model {self.model_id} could not be loaded: {exc}",
                code="model_load_failed",
            ) from exc

    def _load(self) -> LlamaEmbedder:
        started = time.perf_counter()
        path = prepare_gguf(self.source, self.cache_dir)
        embedder = LlamaEmbedder(
            path,
            threads=self.settings.threads or 1,
            batch_tokens=self.settings.batch_tokens,
        )
        self._embedder = embedder
        info = embedder.info
        logger.info(
            "Loaded embedding model %s from %s in %.2f s (%d dimensions, %s pooling, "
            "inputs truncated to %d tokens)",
            self.model_id, self.source.location, time.perf_counter() - started,
            info.dimensions, info.pooling, info.max_seq_length,
        )
        return embedder

    async def embed(self, texts: list[str], *, truncate: bool = True) -> EmbeddingResult:
        """Embed texts; raise InvalidRequestError when a limit of the settings is exceeded.

        Inputs longer than the model's sequence limit are cut to it when ``truncate`` is
        true, as sentence-transformers does, and rejected otherwise.
        """
        self.check_count(len(texts))
        return await self._run(texts, truncate)

    async def rerank(self, query: str, documents: list[str]) -> RerankResult:
        """Score documents by the cosine similarity of their vectors to the query's.

        The cosine in [-1, 1] is mapped linearly to [0, 1], so 0.5 means unrelated.
        """
        self.check_count(len(documents), "documents")
        result = await self._run([query, *documents], truncate=True)
        similarities = result.array[1:] @ result.array[0]
        scores = [float(np.clip((value + 1.0) / 2.0, 0.0, 1.0)) for value in similarities]
        return RerankResult(scores=scores, prompt_tokens=result.prompt_tokens)

    async def _run(self, texts: list[str], truncate: bool) -> EmbeddingResult:
        embedder = await self._embedder_for_request()
        async with self._lock:
            started = time.perf_counter()
            result = await asyncio.to_thread(self._embed, embedder, texts, truncate)
            self._encode_seconds_total += time.perf_counter() - started
        self._requests_total += 1
        self._inputs_total += len(texts)
        self._tokens_total += result.prompt_tokens
        return result

    def stats(self) -> dict[str, int | float]:
        """Return counters for the metrics endpoint (enclave_embeddings_<key>)."""
        return {
            "loaded": int(self._embedder is not None),
            "requests_total": self._requests_total,
            "inputs_total": self._inputs_total,
            "tokens_total": self._tokens_total,
            "encode_seconds_total": self._encode_seconds_total,
        }

    def check_count(self, count: int, param: str = "input") -> None:
        """Raise InvalidRequestError if a request has more inputs than embeddings.max_inputs."""
        if count > self.settings.max_inputs:
            raise InvalidRequestError(
                f"The request has {count} inputs in '{param}', more than the maximum of "
                f"{self.settings.max_inputs} (embeddings.max_inputs). Split it into smaller "
                "requests.",
                param=param,
                code="too_many_inputs",
            )

    def _embed(self, embedder: LlamaEmbedder, texts: list[str], truncate: bool
               ) -> EmbeddingResult:
        token_lists = []
        for index, text in enumerate(texts):
            tokens = embedder.tokenize(text)
            self._check_length(index, len(tokens), embedder.max_seq_length, truncate)
            token_lists.append(embedder.truncate(tokens))
        array = embedder.embed_tokens(token_lists)
        return EmbeddingResult(array=array, prompt_tokens=sum(map(len, token_lists)))

    def _check_length(self, index: int, length: int, model_limit: int, truncate: bool) -> None:
        if truncate and length > self.settings.max_input_tokens:
            raise InvalidRequestError(
                f"Input {index} has {length} tokens, more than the maximum of "
                f"{self.settings.max_input_tokens} (embeddings.max_input_tokens). Shorten it "
                "or split it into several inputs.",
                param="input",
                code="input_too_long",
            )
        if not truncate and length > model_limit:
            raise InvalidRequestError(
                f"Input {index} has {length} tokens, more than the {model_limit} tokens this "
                "model reads. Shorten it, or allow truncation to the model's limit.",
                param="input",
                code="input_too_long",
            )

    async def close(self) -> None:
        if self._loading is not None and not self._loading.done():
            await asyncio.wait([self._loading])
        if self._embedder is not None:
            async with self._lock:
                await asyncio.to_thread(self._embedder.close)
            self._embedder = None


def create_embedding_service(settings: EmbeddingsSettings, data_dir: Path
                             ) -> EmbeddingService | None:
    """Return the service, None when embeddings are disabled; raise ConfigError for a bad model.

    Converted models are cached in ``<data_dir>/cache/embeddings``.
    """
    if not settings.enabled:
        return None
    return EmbeddingService(settings, data_dir / "cache" / "embeddings")
