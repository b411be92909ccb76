"""Fixtures shared by all tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.models.embedded import default_chat_model
from tests.server import ServerProcess, running_server


@pytest.fixture(scope="session")
def model_path() -> Path:
    return default_chat_model()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the whole session, with the embedded model and default settings."""
    with running_server(tmp_path_factory.mktemp("server")) as process:
        yield process
