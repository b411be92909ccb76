"""Start-up of ``enclave serve`` with other embedding models, a bad one, or embeddings off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enclave.embeddings.source import prepare_gguf, resolve_source
from enclave.models.embedded import default_chat_model
from tests.server import ServerProcess, running_server

pytestmark = pytest.mark.slow


def serve_until_exit(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HOME": str(tmp_path), "ENCLAVE_DATA_DIR": str(tmp_path),
                   **env}
    environment.pop("ENCLAVE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "enclave", "serve", "--port", "0"],
                          capture_output=True, text=True, env=environment, cwd=tmp_path,
                          timeout=90)


def test_unsupported_folder_fails_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "xlm-r"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"]}))

    result = serve_until_exit(tmp_path, {"ENCLAVE_EMBEDDINGS__MODEL": str(folder)})

    assert result.returncode == 2
    assert "XLMRobertaModel" in result.stderr
    assert "only BERT models" in result.stderr
    assert "Traceback" not in result.stderr


def test_chat_model_as_embedding_model_fails_at_start(tmp_path: Path) -> None:
    result = serve_until_exit(tmp_path, {"ENCLAVE_EMBEDDINGS__MODEL": str(default_chat_model())})

    assert result.returncode != 0
    assert "not an encoder embedding model" in result.stderr


def test_gguf_embedding_model_is_served(tmp_path: Path, server: ServerProcess) -> None:
    gguf_path = prepare_gguf(resolve_source(None), tmp_path / "converted")
    model_id = gguf_path.name.removesuffix(".gguf")
    body = {"model": "all-MiniLM-L6-v2", "input": "Where is the audit log stored?"}
    expected = server.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]

    with running_server(tmp_path, env={"ENCLAVE_EMBEDDINGS__MODEL": str(gguf_path)}) as other:
        listed = [item["id"] for item in other.get("/v1/models").json()["data"]]
        response = other.post("/v1/embeddings", json={**body, "model": model_id})

    assert model_id in listed
    assert f"{model_id}-cosine-rerank" in listed
    assert response.status_code == 200, response.text
    served = response.json()["data"][0]["embedding"]
    assert float(np.dot(served, expected)) > 0.99999


def test_disabled_embeddings_return_404(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"ENCLAVE_EMBEDDINGS__ENABLED": "false"}) as server:
        listed = [item["id"] for item in server.get("/v1/models").json()["data"]]
        embeddings = server.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                                         "input": "hi"})
        reranked = server.post("/v1/rerank", json={"query": "q", "documents": ["d"]})

    assert listed == ["SmolLM2-135M-Instruct.Q4_1"]
    for response in (embeddings, reranked):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "embeddings_disabled"
        assert "embeddings.enabled" in response.json()["error"]["message"]
