"""A server killed with SIGKILL while eight clients stream keeps every acknowledged record.

What "acknowledged" means here: the server commits a request's ``open`` record before it
starts the response (under the default fail-closed policy ``accept()`` waits for the
commit), so a client that has received the response headers has proof that its open
record was committed. Those eight records must survive the kill. The ``close`` records are
written after the last byte and no client is told about them, so after the kill the eight
requests must read as interrupted (an open record without a close), and the chain, extended
by the restarted server, must still verify.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from enclave.engine.llama_model import LlamaModel
from enclave.models.embedded import default_chat_model
from tests.server import DEFAULT_MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

CLIENTS = 8
SERVER_ARGS = ("--parallel", str(CLIENTS), "--context-size", "512")
SERVER_ENV = {"ENCLAVE_EMBEDDINGS__ENABLED": "false"}


def no_eos_bias() -> dict[str, int]:
    """A logit bias that bans every end-of-generation token, so streams run to max_tokens."""
    model = LlamaModel(default_chat_model(), vocab_only=True)
    try:
        return {str(token): -100 for token in range(model.n_vocab)
                if model.is_end_of_generation(token)}
    finally:
        model.close()


def stream_until_killed(server: ServerProcess, request_id: str, bias: dict[str, int],
                        acknowledged: list[str], started: threading.Semaphore) -> None:
    body = {"model": DEFAULT_MODEL, "stream": True, "max_tokens": 400, "logit_bias": bias,
            "messages": [{"role": "user", "content": f"Count to a thousand ({request_id})."}]}
    try:
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body,
                          headers={"X-Request-Id": request_id}, timeout=60) as response:
            if response.status_code == 200:
                acknowledged.append(request_id)
            started.release()
            for _ in response.iter_lines():
                pass
    except httpx.TransportError:
        pass  # the server was killed mid-stream
    finally:
        started.release()


def stored(data_dir: Path) -> dict[str, set[str]]:
    """Return {request id: kinds of its records} from the SQLite audit store."""
    kinds: dict[str, set[str]] = {}
    with sqlite3.connect(data_dir / "audit" / "audit.db") as connection:
        for (text,) in connection.execute("SELECT record FROM audit_records"):
            record = json.loads(text)
            kinds.setdefault(record["request_id"], set()).add(record["kind"])
    return kinds


def test_sigkill_keeps_acknowledged_records(tmp_path: Path) -> None:
    bias = no_eos_bias()
    acknowledged: list[str] = []
    started = threading.Semaphore(0)
    with running_server(tmp_path, *SERVER_ARGS, env=SERVER_ENV) as server:
        clients = [threading.Thread(target=stream_until_killed,
                                    args=(server, f"crash-{index}", bias, acknowledged, started))
                   for index in range(CLIENTS)]
        for client in clients:
            client.start()
        for _ in range(CLIENTS):
            assert started.acquire(timeout=60)
        server.kill()
        for client in clients:
            client.join(timeout=60)

    assert sorted(acknowledged) == [f"crash-{index}" for index in range(CLIENTS)]
    records = stored(tmp_path / "data")
    assert {rid: records.get(rid) for rid in acknowledged} == {
        rid: {"open"} for rid in acknowledged}

    # The restarted server continues the chain, and the whole chain verifies.
    with running_server(tmp_path, *SERVER_ARGS, env=SERVER_ENV) as server:
        after = server.post("/v1/chat/completions", headers={"X-Request-Id": "after-crash"},
                            json={"model": DEFAULT_MODEL, "max_tokens": 3,
                                  "messages": [{"role": "user", "content": "Hi"}]})
        assert after.status_code == 200
    assert stored(tmp_path / "data")["after-crash"] == {"open", "close"}
    env = {**os.environ, "ENCLAVE_DATA_DIR": str(tmp_path / "data")}
    env.pop("ENCLAVE_CONFIG", None)
    verified = subprocess.run([sys.executable, "-m", "enclave", "audit", "verify"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
