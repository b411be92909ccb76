"""``POST /v1/rerank`` and ``/rerank`` on the real server, in the Jina/Cohere request shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
RERANK_MODEL = "all-MiniLM-L6-v2-cosine-rerank"
DOCUMENTS = [
    "Bananas are a good source of potassium.",
    "Berlin is the capital and largest city of Germany.",
    "Paris is the capital of France and its largest city.",
    "The stock market closed higher on Friday.",
]


def rerank(server: ServerProcess, body: dict[str, Any], path: str = "/v1/rerank") -> Any:
    return server.post(path, json=body)


def test_rerank_ranks_matching_document_first(server: ServerProcess) -> None:
    response = rerank(server, {"model": RERANK_MODEL, "query": "capital of France",
                               "documents": DOCUMENTS})

    body = response.json()
    assert response.status_code == 200, response.text
    assert body["model"] == RERANK_MODEL
    results = body["results"]
    assert [item["index"] for item in results][:2] == [2, 1]
    assert results[0]["document"] == {"text": DOCUMENTS[2]}
    scores = [item["relevance_score"] for item in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 0


def test_rerank_top_n_limits_results(server: ServerProcess) -> None:
    response = rerank(server, {"model": RERANK_MODEL, "query": "capital of France",
                               "documents": DOCUMENTS, "top_n": 1})

    results = response.json()["results"]
    assert len(results) == 1
    assert results[0]["index"] == 2


def test_rerank_top_n_above_count_returns_all(server: ServerProcess) -> None:
    response = rerank(server, {"model": RERANK_MODEL, "query": "capital of France",
                               "documents": DOCUMENTS, "top_n": 10})

    assert sorted(item["index"] for item in response.json()["results"]) == [0, 1, 2, 3]


def test_rerank_alias_accepts_document_objects(server: ServerProcess) -> None:
    # Without model the rerank model is used; documents may be {"text": ...} objects.
    response = rerank(server, {"query": "capital of France",
                               "documents": [{"text": text} for text in DOCUMENTS],
                               "return_documents": False}, path="/rerank")

    body = response.json()
    assert response.status_code == 200, response.text
    assert body["model"] == RERANK_MODEL
    assert body["results"][0]["index"] == 2
    assert "document" not in body["results"][0]


def test_rerank_accepts_embedding_model_id(server: ServerProcess) -> None:
    response = rerank(server, {"model": EMBEDDING_MODEL, "query": "capital of France",
                               "documents": DOCUMENTS})

    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["index"] == 2


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"query": "q", "documents": []}, 400, "documents", ["documents"]),
        ({"query": "", "documents": ["d"]}, 400, "query", ["query"]),
        ({"documents": ["d"]}, 400, "query", ["Missing", "query"]),
        ({"query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n", ["top_n"]),
        ({"query": "q", "documents": ["d", {"title": "no text"}]}, 400, "documents[1]",
         ["'text' string"]),
        ({"query": "q", "documents": [7]}, 400, "documents[0]", ["must be a string"]),
        ({"query": "q", "documents": ["d"] * 2049}, 400, "documents", ["2049", "2048"]),
        ({"model": DEFAULT_MODEL, "query": "q", "documents": ["d"]}, 400, "model",
         ["chat model", RERANK_MODEL]),
        ({"model": "bge-reranker-v2-m3", "query": "q", "documents": ["d"]}, 404, "model",
         ["bge-reranker-v2-m3", RERANK_MODEL]),
    ],
    ids=["no-documents", "empty-query", "missing-query", "zero-top-n", "document-without-text",
         "number-document",
         "too-many", "chat-model", "unknown-model"],
)
def test_rerank_rejects_invalid_request(server: ServerProcess, body: dict[str, Any],
                                        status: int, param: str, words: list[str]) -> None:
    response = rerank(server, body)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    for word in words:
        assert word in error["message"], error["message"]
