"""The evaluation text that ships with Enclave (see data/SOURCE.md for its source)."""

from __future__ import annotations

from importlib import resources

DEFAULT_TEXT_FILE = "pride_and_prejudice_ch1-2.txt"
DEFAULT_TEXT_NAME = "Pride and Prejudice, chapters 1-2 (Jane Austen, 1813; public domain)"


def default_text() -> str:
    """Return the built-in evaluation text."""
    return resources.files("enclave.quantize").joinpath("data", DEFAULT_TEXT_FILE).read_text(
        encoding="utf-8")
