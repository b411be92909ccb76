"""``POST /v1/embeddings`` on the real server, through the official openai SDK and raw HTTP.

Vectors are compared with sentence-transformers running the same all-MiniLM-L6-v2 files, the
reference implementation the served vectors must match.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import openai
import pytest

from enclave.embeddings.source import default_model_folder
from tests.server import DEFAULT_MODEL, ServerProcess

pytestmark = pytest.mark.slow

MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
LONG_TEXT = " ".join(f"Clause {number} limits how long records are kept." for number in range(90))
REFERENCE_TEXTS = [
    "The capital of France is Paris.",
    "A knowledge base splits documents into chunks before embedding them.",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "病人的血压在服药后明显下降。",
    "Café, déjà vu and naïve résumé.",
    LONG_TEXT,  # about 700 tokens, truncated to 256 by both implementations
]


@pytest.fixture(scope="module")
def reference_vectors() -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(default_model_folder()), device="cpu")
    return model.encode(REFERENCE_TEXTS, normalize_embeddings=True)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def embed(server: ServerProcess, body: dict[str, Any]) -> Any:
    return server.post("/v1/embeddings", json=body)


def assert_error(response: Any, status: int, param: str | None, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    for word in words:
        assert word in error["message"], error["message"]


def test_vectors_match_reference(client: openai.OpenAI, reference_vectors: Any) -> None:
    response = client.embeddings.create(model=MODEL, input=REFERENCE_TEXTS,
                                        encoding_format="float")

    served = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert [item.index for item in response.data] == list(range(len(REFERENCE_TEXTS)))
    assert served.shape == (len(REFERENCE_TEXTS), DIMENSIONS)
    cosines = np.sum(served * reference_vectors, axis=1)
    for text, cosine in zip(REFERENCE_TEXTS, cosines, strict=True):
        assert cosine >= 0.999, (text[:40], cosine)


def test_base64_decodes_to_float_vectors(client: openai.OpenAI) -> None:
    # Without encoding_format the SDK requests base64 and decodes it itself.
    decoded = client.embeddings.create(model=MODEL, input=["hello", "world"])
    floats = client.embeddings.create(model=MODEL, input=["hello", "world"],
                                      encoding_format="float")

    for left, right in zip(decoded.data, floats.data, strict=True):
        assert len(left.embedding) == DIMENSIONS
        np.testing.assert_array_equal(np.float32(left.embedding), np.float32(right.embedding))


def test_base64_is_little_endian_float32(server: ServerProcess, client: openai.OpenAI) -> None:
    response = embed(server, {"model": MODEL, "input": "hello", "encoding_format": "base64"})
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    floats = client.embeddings.create(model=MODEL, input="hello", encoding_format="float")

    assert len(raw) == DIMENSIONS * 4
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"),
                                  np.float32(floats.data[0].embedding))


def test_hi_returns_one_normalised_vector(server: ServerProcess) -> None:
    response = embed(server, {"model": MODEL, "input": "hi"})

    body = response.json()
    assert response.status_code == 200, response.text
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # [CLS] hi [SEP]
    assert len(body["data"]) == 1
    assert body["data"][0]["object"] == "embedding"
    assert body["data"][0]["index"] == 0
    assert np.linalg.norm(body["data"][0]["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_batch_of_ten_keeps_order(client: openai.OpenAI) -> None:
    texts = [f"Chunk {number} of the employee handbook covers topic {number}."
             for number in range(10)]

    batch = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    single = client.embeddings.create(model=MODEL, input=texts[7], encoding_format="float")

    assert [item.index for item in batch.data] == list(range(10))
    assert batch.usage.prompt_tokens == batch.usage.total_tokens > 10 * 10
    cosine = float(np.dot(batch.data[7].embedding, single.data[0].embedding))
    assert cosine > 0.99999
    assert float(np.dot(batch.data[6].embedding, single.data[0].embedding)) < 0.99


def test_dimensions_equal_to_model_size_is_accepted(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model=MODEL, input="hi", dimensions=DIMENSIONS,
                                        encoding_format="float")

    assert len(response.data[0].embedding) == DIMENSIONS


def test_dimensions_other_than_model_size_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=MODEL, input="hi", dimensions=256)

    error = raised.value.body
    assert isinstance(error, dict)
    assert error["param"] == "dimensions"
    assert "dimensions = 256" in error["message"]
    assert "384" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": MODEL, "input": []}, "input", ["empty list"]),
        ({"model": MODEL, "input": ""}, "input[0]", ["empty string"]),
        ({"model": MODEL, "input": ["fine", ""]}, "input[1]", ["empty string"]),
        ({"model": MODEL, "input": 42}, "input", ["string or a list of strings", "a number"]),
        ({"model": MODEL, "input": {"text": "hi"}}, "input", ["an object"]),
        ({"model": MODEL, "input": ["fine", 3]}, "input[1]", ["must be a string", "a number"]),
        ({"model": MODEL, "input": ["fine", None]}, "input[1]", ["null"]),
        ({"model": MODEL, "input": [1, 2, 3]}, "input", ["token ids", "strings"]),
        ({"model": MODEL, "input": [[1, 2], [3]]}, "input", ["token ids"]),
        ({"model": MODEL}, "input", ["Missing", "input"]),
        ({"input": "hi"}, "model", ["model"]),
        ({"model": MODEL, "input": "hi", "encoding_format": "int8"}, "encoding_format",
         ["encoding_format"]),
        ({"model": MODEL, "input": "hi", "dimensions": 0}, "dimensions", ["dimensions"]),
        ({"model": DEFAULT_MODEL, "input": "hi"}, "model", ["chat model", MODEL]),
    ],
    ids=["empty-list", "empty-string", "empty-item", "number", "object", "mixed", "null-item",
         "token-ids", "token-id-lists", "missing-input", "missing-model", "format",
         "zero-dimensions", "chat-model"],
)
def test_invalid_input_is_rejected(server: ServerProcess, body: dict[str, Any], param: str,
                                   words: list[str]) -> None:
    assert_error(embed(server, body), 400, param, *words)


def test_unknown_model_is_not_found(server: ServerProcess) -> None:
    response = embed(server, {"model": "text-embedding-3-small", "input": "hi"})

    assert_error(response, 404, "model", "text-embedding-3-small", MODEL)
    assert response.json()["error"]["code"] == "model_not_found"


def test_too_many_inputs_are_rejected(server: ServerProcess) -> None:
    response = embed(server, {"model": MODEL, "input": ["a"] * 2049})

    assert_error(response, 400, "input", "2049", "2048", "embeddings.max_inputs")
    assert response.json()["error"]["code"] == "too_many_inputs"


def test_too_long_input_is_rejected(server: ServerProcess) -> None:
    response = embed(server, {"model": MODEL, "input": ["short", "word " * 9000]})

    assert_error(response, 400, "input", "Input 1", "9002 tokens", "8192",
                 "embeddings.max_input_tokens")


def test_models_lists_embedding_and_rerank(server: ServerProcess) -> None:
    listed = [item["id"] for item in server.get("/v1/models").json()["data"]]
    single = server.get(f"/v1/models/{MODEL}")

    assert listed[0] == DEFAULT_MODEL
    assert MODEL in listed
    assert f"{MODEL}-cosine-rerank" in listed
    assert single.status_code == 200
    assert single.json()["id"] == MODEL


def test_metrics_count_embedding_requests(server: ServerProcess) -> None:
    def requests_total() -> float:
        for line in server.get("/metrics").text.splitlines():
            if line.startswith("enclave_embeddings_requests_total "):
                return float(line.split()[1])
        raise AssertionError("enclave_embeddings_requests_total is missing from /metrics")

    before = requests_total()
    embed(server, {"model": MODEL, "input": ["one", "two"]})

    assert requests_total() == before + 1
