"""The models a server offers: the default model and every GGUF file in the models folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enclave.config import EngineSettings
from enclave.errors import ConfigError, ModelNotFoundError
from enclave.i18n import _
from enclave.models.embedded import default_chat_model


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A servable model: its public id and its file."""

    id: str
    path: Path


def model_id_for(path: Path) -> str:
    """Return the id a model file is served under: its file name without .gguf."""
    return path.name.removesuffix(".gguf")


class ModelRegistry:
    """Maps model ids to GGUF files. The folder is listed again on every lookup."""

    def __init__(self, settings: EngineSettings) -> None:
        self._models_dir = settings.models_dir
        self.default = self._resolve_default(settings.model)

    def _resolve_default(self, model: str | None) -> ModelEntry:
        if model is None:
            path = default_chat_model()
            return ModelEntry(model_id_for(path), path)
        path = Path(model).expanduser()
        if path.is_file():
            return ModelEntry(model_id_for(path), path.resolve())
        if self._models_dir is not None:
            for entry in self._folder_entries():
                if entry.id == model:
                    return entry
        if self._models_dir is not None:
            raise ConfigError(_(
                "engine.model = {model!r} is neither an existing .gguf file nor a model id in "
                "{folder}. Pass the path of a GGUF file.", model=model, folder=self._models_dir))
        raise ConfigError(_("engine.model = {model!r} is not an existing .gguf file. Pass the "
                            "path of a GGUF file.", model=model))

    def _folder_entries(self) -> list[ModelEntry]:
        if self._models_dir is None:
            return []
        return [
            ModelEntry(model_id_for(path), path.resolve())
            for path in sorted(self._models_dir.glob("*.gguf"))
            if path.is_file()
        ]

    def entries(self) -> list[ModelEntry]:
        """Return every servable model, the default first."""
        others = [entry for entry in self._folder_entries() if entry.id != self.default.id]
        return [self.default, *others]

    def get(self, model_id: str) -> ModelEntry:
        """Return the model with this id; raise ModelNotFoundError naming the available ones."""
        entries = self.entries()
        for entry in entries:
            if entry.id == model_id:
                return entry
        raise ModelNotFoundError(model_id, [entry.id for entry in entries])
