"""Model descriptions for /api/tags, /api/show and /api/ps, in Ollama's shapes.

Facts come from the GGUF metadata: of the loaded engine, or, for a model not loaded yet, from
reading its vocabulary and metadata once (cached until the file changes). The context length
reported is the one Enclave serves, ``min(engine.context_size, the model's training
context)``, under ``model_info["<architecture>.context_length"]``, where clients such as
Cherry Studio read it, and under ``details.context_length``.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import llama_cpp

from enclave.config import EngineSettings
from enclave.engine.llama_engine import LlamaEngine
from enclave.engine.llama_model import LlamaModel
from enclave.engine.templates import ChatTemplate, select_template
from enclave.models.registry import ModelEntry
from enclave.output.plan import ReasoningSetting, model_thinks

# Metadata that /api/show leaves out: vocabulary arrays and the template (shown separately).
_HIDDEN_PREFIXES = ("tokenizer.ggml.", "tokenizer.chat_template")
_FILE_TYPES = {
    getattr(llama_cpp, name): name.removeprefix("LLAMA_FTYPE_MOSTLY_").removeprefix("LLAMA_FTYPE_")
    for name in dir(llama_cpp)
    if name.startswith("LLAMA_FTYPE_") and name != "LLAMA_FTYPE_GUESSED"
}


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Facts about one model, as the Ollama API reports them."""

    id: str
    size: int
    modified: float
    metadata: dict[str, str]
    n_params: int
    n_ctx_train: int
    template: ChatTemplate

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "unknown")

    def context_length(self, settings: EngineSettings) -> int:
        """Return the context a request to this model gets, as LlamaEngine computes it."""
        return min(settings.context_size, self.n_ctx_train or settings.context_size)


async def model_facts(entry: ModelEntry, engine: LlamaEngine | None,
                      settings: EngineSettings) -> ModelFacts:
    """Return the facts of a model, from its engine if loaded, else from the file."""
    stat = entry.path.stat()
    if engine is not None:
        model = engine.model
        return ModelFacts(entry.id, stat.st_size, stat.st_mtime, model.metadata,
                          model.n_params, model.n_ctx_train, engine.template)
    return await asyncio.to_thread(_facts_from_file, entry.id, entry.path, stat.st_size,
                                   stat.st_mtime_ns, settings.chat_template)


@lru_cache(maxsize=64)
def _facts_from_file(model_id: str, path: Path, size: int, mtime_ns: int,
                     template_override: str | None) -> ModelFacts:
    # Cached by size and modification time, so a replaced file is read again.
    model = LlamaModel(path, vocab_only=True)
    try:
        template = select_template(model.chat_template, template_override, model_name=model_id,
                                   bos_token=model.bos_text, eos_token=model.eos_text)
        return ModelFacts(model_id, size, mtime_ns / 1e9, dict(model.metadata), model.n_params,
                          model.n_ctx_train, template)
    finally:
        model.close()


def timestamp(unix_s: float) -> str:
    """Return an RFC 3339 UTC time, as Ollama's JSON writes times."""
    moment = datetime.datetime.fromtimestamp(unix_s, tz=datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def digest(facts: ModelFacts) -> str:
    """Return a stable identifier of the model file.

    Ollama sends the SHA-256 of the weights. Hashing a multi-gigabyte file on every listing is
    too slow, so this hashes the id, size and modification time instead: it changes when the
    file does, which is what clients use it for, but it is not the content hash.
    """
    key = f"{facts.id}:{facts.size}:{facts.modified}".encode()
    return hashlib.sha256(key).hexdigest()


def parameter_size(facts: ModelFacts) -> str:
    label = facts.metadata.get("general.size_label")
    if label:
        return label
    count = facts.n_params
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def quantization_level(facts: ModelFacts) -> str:
    raw = facts.metadata.get("general.file_type")
    if raw is None or not raw.isdigit():
        return "unknown"
    return _FILE_TYPES.get(int(raw), f"type {raw}")


def details(facts: ModelFacts, settings: EngineSettings) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": facts.architecture,
        "families": [facts.architecture],
        "parameter_size": parameter_size(facts),
        "quantization_level": quantization_level(facts),
        "context_length": facts.context_length(settings),
    }


def capabilities(facts: ModelFacts, reasoning: ReasoningSetting) -> list[str]:
    """Return Ollama's capability names for the model.

    Every chat model gets "tools", because Enclave describes tools in the prompt for templates
    that do not.
    """
    names = ["completion", "tools"]
    if model_thinks(facts.template, reasoning):
        names.append("thinking")
    return names


def model_info(facts: ModelFacts, settings: EngineSettings) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for key, value in sorted(facts.metadata.items()):
        if not key.startswith(_HIDDEN_PREFIXES):
            info[key] = _typed(value)
    info["general.architecture"] = facts.architecture
    info["general.parameter_count"] = facts.n_params
    info[f"{facts.architecture}.context_length"] = facts.context_length(settings)
    return info


def tag_entry(facts: ModelFacts, settings: EngineSettings) -> dict[str, Any]:
    """Return one entry of /api/tags."""
    return {
        "name": facts.id,
        "model": facts.id,
        "modified_at": timestamp(facts.modified),
        "size": facts.size,
        "digest": digest(facts),
        "details": details(facts, settings),
    }


def show(facts: ModelFacts, settings: EngineSettings, reasoning: ReasoningSetting
         ) -> dict[str, Any]:
    """Return the body of /api/show."""
    context = facts.context_length(settings)
    return {
        "license": facts.metadata.get("general.license", ""),
        "modelfile": f"# Served by Enclave\nFROM {facts.id}\nPARAMETER num_ctx {context}\n",
        "parameters": f"num_ctx {context}",
        "template": facts.template.source,
        "details": details(facts, settings),
        "model_info": model_info(facts, settings),
        "capabilities": capabilities(facts, reasoning),
        "modified_at": timestamp(facts.modified),
    }


def running_entry(facts: ModelFacts, settings: EngineSettings) -> dict[str, Any]:
    """Return one entry of /api/ps.

    Enclave unloads a model only to make room for another (engine.max_loaded_models), never
    after a timeout, so ``expires_at`` is the latest time JSON clients can parse.
    """
    # The whole file when layers are offloaded: an upper bound if only some of them are.
    on_gpu = facts.size if settings.gpu_layers != 0 else 0
    return {
        **tag_entry(facts, settings),
        "expires_at": "9999-12-31T23:59:59Z",
        "size_vram": on_gpu,
        "context_length": facts.context_length(settings),
    }


def _typed(value: str) -> Any:
    """Return metadata as the number it holds, when it is one; llama.cpp gives strings."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
