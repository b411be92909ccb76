"""Loaded engines, one per model, loaded on first use and unloaded when idle and least used."""

from __future__ import annotations

import asyncio
import logging

from enclave.config import EngineSettings
from enclave.engine.llama_engine import LlamaEngine
from enclave.errors import EngineUnavailableError
from enclave.models.registry import ModelEntry, ModelRegistry

logger = logging.getLogger(__name__)


class EnginePool:
    """Keeps at most ``max_loaded_models`` engines; the default model is loaded at start."""

    def __init__(self, settings: EngineSettings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self._engines: dict[str, LlamaEngine] = {}
        self._lock = asyncio.Lock()

    @property
    def default_id(self) -> str:
        return self.registry.default.id

    def loaded(self) -> dict[str, LlamaEngine]:
        return dict(self._engines)

    def load_default(self) -> LlamaEngine:
        """Load the default model now, on this thread; used before the server starts so that
        a broken model file is reported as a start-up error, not a failed lifespan."""
        engine = self._engines.get(self.default_id)
        if engine is None:
            entry = self.registry.default
            engine = LlamaEngine.load(entry.id, entry.path, self.settings)
            self._engines[entry.id] = engine
        return engine

    async def start(self) -> LlamaEngine:
        """Load the default model, unless load_default() already did."""
        return await self.get(self.default_id)

    async def get(self, model_id: str) -> LlamaEngine:
        """Return the engine of a model, loading it first if needed."""
        engine = self._engines.get(model_id)
        if engine is not None:
            return engine
        entry = self.registry.get(model_id)
        async with self._lock:
            engine = self._engines.get(model_id)
            if engine is None:
                await self._make_room()
                engine = await asyncio.to_thread(LlamaEngine.load, entry.id, entry.path,
                                                 self.settings)
                self._engines[model_id] = engine
        return engine

    async def _make_room(self) -> None:
        if len(self._engines) < self.settings.max_loaded_models:
            return
        idle = [
            engine for engine in self._engines.values()
            if engine.stats()["slots_active"] == 0 and engine.stats()["queue_depth"] == 0
        ]
        if not idle:
            raise EngineUnavailableError(
                f"All {len(self._engines)} loaded models are busy and engine.max_loaded_models "
                f"is {self.settings.max_loaded_models}; retry later or raise the limit.",
                retry_after_s=10,
            )
        victim = min(idle, key=lambda engine: engine.last_used)
        del self._engines[victim.info.id]
        logger.info("Unloading idle model %s to make room", victim.info.id)
        await asyncio.to_thread(victim.close)

    def entries(self) -> list[ModelEntry]:
        return self.registry.entries()

    async def close(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await asyncio.to_thread(engine.close)
