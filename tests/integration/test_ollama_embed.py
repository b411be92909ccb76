"""/api/embed and /api/embeddings on the embedding service, through the ollama client."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import numpy as np
import ollama
import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base_url, timeout=120) as ollama_client:
        yield ollama_client


def test_embed_batch_returns_unit_vectors(client: ollama.Client) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Stock prices fell."]
    response = client.embed(model=EMBEDDING_MODEL, input=texts)
    vectors = np.array(response.embeddings)
    assert vectors.shape == (3, DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Related sentences are closer than unrelated ones.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert response.prompt_eval_count is not None and response.prompt_eval_count > 10


def test_embed_single_string_and_legacy_route(client: ollama.Client) -> None:
    single = client.embed(model=EMBEDDING_MODEL, input="hi")
    legacy = client.embeddings(model=EMBEDDING_MODEL, prompt="hi")
    assert len(single.embeddings) == 1
    assert np.allclose(single.embeddings[0], legacy.embedding, atol=1e-5)


def test_embed_dimensions_and_truncate(server: ServerProcess) -> None:
    same = server.post("/api/embed", json={"model": EMBEDDING_MODEL, "input": ["a", "b"],
                                          "dimensions": DIMENSIONS, "truncate": False})
    assert same.status_code == 200
    assert len(same.json()["embeddings"]) == 2

    shorter = server.post("/api/embed", json={"model": EMBEDDING_MODEL, "input": "a",
                                             "dimensions": 64})
    assert shorter.status_code == 400
    assert "64" in shorter.json()["error"]

    too_long = server.post("/api/embed", json={"model": EMBEDDING_MODEL,
                                              "input": "word " * 2000, "truncate": False})
    assert too_long.status_code == 400
    assert set(too_long.json()) == {"error"}


def test_embed_rejects_chat_model_and_bad_input(server: ServerProcess) -> None:
    chat_model = server.post("/api/embed", json={"model": DEFAULT_MODEL, "input": "a"})
    assert chat_model.status_code == 400
    assert EMBEDDING_MODEL in chat_model.json()["error"]
    empty = server.post("/api/embed", json={"model": EMBEDDING_MODEL, "input": [""]})
    assert empty.status_code == 400
    assert "input[0]" in empty.json()["error"]
    legacy_empty = server.post("/api/embeddings", json={"model": EMBEDDING_MODEL})
    assert legacy_empty.status_code == 400
    assert "prompt" in legacy_empty.json()["error"]


def test_embed_audit_counts_tokens(server: ServerProcess) -> None:
    request_ids = ["embed-audit", "embeddings-audit"]
    embedded = server.post("/api/embed", headers={"X-Request-Id": request_ids[0]},
                           json={"model": EMBEDDING_MODEL, "input": ["one two", "three"]})
    legacy = server.post("/api/embeddings", headers={"X-Request-Id": request_ids[1]},
                         json={"model": EMBEDDING_MODEL, "prompt": "one two"})
    assert embedded.status_code == 200, embedded.text
    assert legacy.status_code == 200, legacy.text

    audit_db = server.log_path.parent / "data" / "audit" / "audit.db"
    closed = {}
    deadline = time.monotonic() + 10
    while len(closed) < 2 and time.monotonic() < deadline:
        with sqlite3.connect(audit_db) as connection:
            for (text,) in connection.execute("SELECT record FROM audit_records"):
                record = json.loads(text)
                if record["kind"] == "close" and record["request_id"] in request_ids:
                    closed[record["request_id"]] = record
        time.sleep(0.05)

    assert closed["embed-audit"]["prompt_tokens"] == embedded.json()["prompt_eval_count"]
    assert closed["embeddings-audit"]["prompt_tokens"] > 0
