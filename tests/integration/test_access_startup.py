"""Start-up refuses to listen beyond loopback unless API keys protect the server.

The refusal must come before the listening socket is bound. To show that without ever
listening on 0.0.0.0, the test first listens on 127.0.0.1 at the same port: a server that
tried to bind 0.0.0.0 there would fail with "address in use" instead of the key message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.access import manage
from enclave.access.store import SqliteKeyStore

pytestmark = pytest.mark.slow


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        # Precondition: a wildcard bind on this port fails while the holder listens.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError):
                probe.bind(("0.0.0.0", port))
        yield port


def serve(tmp_path: Path, port: int, *args: str,
          env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    environment = {**os.environ, "ENCLAVE_DATA_DIR": str(tmp_path / "data"), "LANG": "C.UTF-8",
                   "LC_ALL": "C.UTF-8", **(env or {})}
    environment.pop("ENCLAVE_CONFIG", None)
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "enclave", "serve", "--host", "0.0.0.0", "--port", str(port),
         *args], capture_output=True, text=True, env=environment, timeout=120, cwd=tmp_path)
    return completed, time.monotonic() - started


def test_network_bind_without_keys_is_refused(tmp_path: Path, occupied_port: int) -> None:
    completed, seconds = serve(tmp_path, occupied_port)
    assert completed.returncode == 2, completed.stderr
    assert "Refusing to listen on 0.0.0.0" in completed.stderr
    assert "enclave keys create" in completed.stderr
    assert "Cannot listen" not in completed.stderr
    assert "Loaded model" not in completed.stderr
    assert seconds < 30


def test_network_bind_with_never_is_refused(tmp_path: Path, occupied_port: int) -> None:
    store = SqliteKeyStore(tmp_path / "data" / "access" / "keys.db")
    manage.create_key(store, manage.KeySpec(user_id="alice"))
    store.close()
    completed, _ = serve(tmp_path, occupied_port,
                         env={"ENCLAVE_ACCESS__REQUIRE_KEYS": "never"})
    assert completed.returncode == 2, completed.stderr
    assert "access.require_keys is 'never'" in completed.stderr
    assert "Cannot listen" not in completed.stderr
