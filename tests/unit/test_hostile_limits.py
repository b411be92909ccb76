"""Limits that keep one hostile request from crashing or stopping the whole server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from enclave.api.health import ready
from enclave.engine.grammar import (
    MAX_GRAMMAR_NESTING,
    MAX_REPETITIONS,
    check_grammar_nesting,
    json_schema_grammar,
    relax,
)
from enclave.engine.llama_model import LlamaModel
from enclave.engine.sampling import SamplingParams
from enclave.engine.scheduler import Scheduler, SchedulerConfig
from enclave.engine.types import GenerationRequest
from enclave.errors import InvalidRequestError

PARAM = "response_format"


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string", "maxLength": MAX_REPETITIONS + 1}, ["maxLength = 1001"]),
        ({"type": "string", "minLength": 10**9}, ["minLength = 1000000000"]),
        ({"type": "string", "maxLength": 1e12}, ["maxLength"]),
        ({"type": "array", "minItems": 5000}, ["minItems = 5000"]),
        ({"type": "array", "items": {"type": "string", "maxLength": 100_000}},
         ["maxLength", "schema.items"]),
        ({"type": "string", "pattern": "^a{2,100000}$"}, ["pattern"]),
        ({"type": "string", "pattern": "^a{100000,}$"}, ["pattern"]),
        ({"type": "string", "pattern": "^a{" + "9" * 5000 + "}$"}, ["pattern"]),
    ],
)
def test_schema_count_above_limit_rejected(schema: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        json_schema_grammar(schema, param=PARAM)

    assert caught.value.param == PARAM
    for word in words:
        assert word in caught.value.message


def test_schema_count_at_limit_accepted() -> None:
    grammar = json_schema_grammar(
        {"type": "string", "minLength": 1, "maxLength": MAX_REPETITIONS}, param=PARAM)

    check_grammar_nesting(grammar, param=PARAM)


def test_pattern_small_repetition_accepted() -> None:
    json_schema_grammar({"type": "string", "pattern": "^[a-z]{2,8}$"}, param=PARAM)


def test_relax_drops_only_oversized_counts() -> None:
    schema = {"type": "string", "minLength": 2, "maxLength": 100_000,
              "pattern": "^a{1,5000}$"}

    assert relax(schema) == {"type": "string", "minLength": 2}


def test_grammar_nesting_above_limit_rejected() -> None:
    depth = MAX_GRAMMAR_NESTING + 1
    grammar = "root ::= " + '("a" ' * depth + ")?" * depth

    with pytest.raises(InvalidRequestError) as caught:
        check_grammar_nesting(grammar, param="grammar")

    assert caught.value.param == "grammar"
    assert str(depth) in caught.value.message


def test_grammar_nesting_ignores_literal_brackets() -> None:
    brackets = "(" * (MAX_GRAMMAR_NESTING + 1)
    grammar = f'root ::= "{brackets}" [(] "\\"(" # {brackets}\n'

    check_grammar_nesting(grammar, param="grammar")


def test_ready_is_503_after_engine_failure() -> None:
    engine = SimpleNamespace(failure="EngineFailure: llama_decode returned -1",
                             stats=lambda: {"slots_active": 0})
    state = SimpleNamespace(ready=True, pool=SimpleNamespace(loaded=lambda: {"m": engine}))

    response = asyncio.run(ready(state))  # type: ignore[arg-type]

    assert response.status_code == 503
    assert json.loads(bytes(response.body))["status"] == "failed"


def test_ready_is_200_when_engines_serve() -> None:
    engine = SimpleNamespace(failure=None, stats=lambda: {"slots_active": 0})
    state = SimpleNamespace(ready=True, pool=SimpleNamespace(loaded=lambda: {"m": engine}))

    response = asyncio.run(ready(state))  # type: ignore[arg-type]

    assert response.status_code == 200
    assert json.loads(bytes(response.body))["status"] == "ready"


@pytest.fixture(scope="module")
def model(model_path: Path) -> Iterator[LlamaModel]:
    loaded = LlamaModel(model_path)
    yield loaded
    loaded.close()


@pytest.mark.slow
def test_scheduler_rejects_empty_prompt(model: LlamaModel) -> None:
    config = SchedulerConfig(parallel=1, kv_cache_tokens=512, batch_size=64, prefill_chunk=16,
                             queue_size=1, threads=1)
    scheduler = Scheduler(model, config, lambda events: None)
    request = GenerationRequest(request_id="req-empty", prompt_tokens=[],
                                params=SamplingParams(), max_tokens=4)
    try:
        with pytest.raises(InvalidRequestError) as caught:
            scheduler.submit(request, sink=None)

        assert caught.value.param == "prompt"
        assert not scheduler._waiting
        assert scheduler.failure is None
    finally:
        scheduler.stop()


@pytest.mark.slow
def test_max_token_bytes_bounds_vocabulary(model: LlamaModel) -> None:
    longest = max(len(model.token_text(token).encode()) for token in range(model.n_vocab))

    assert model.max_token_bytes >= longest
    assert model.max_token_bytes > 1
