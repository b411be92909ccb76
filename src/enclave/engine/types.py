"""Typed values exchanged between the protocol layers and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from enclave.engine.sampling import SamplingParams
from enclave.errors import RequestError

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(slots=True)
class GenerationRequest:
    """One generation job: prompt tokens in, text out."""

    request_id: str
    prompt_tokens: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    # Absolute time.monotonic() value after which the request fails; None means no deadline.
    deadline: float | None = None
    deadline_s: float | None = None


@dataclass(slots=True)
class Timings:
    """Where one request's time went, in milliseconds, and its decode rate."""

    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        # The first token comes out of prefill, so decode produced the rest.
        decoded = self.completion_tokens - 1
        return decoded / (self.decode_ms / 1000.0) if decoded > 0 and self.decode_ms > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "queue_ms": round(self.queue_ms, 3),
            "prefill_ms": round(self.prefill_ms, 3),
            "decode_ms": round(self.decode_ms, 3),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
        }


@dataclass(slots=True)
class TextDelta:
    """Text generated since the previous event; never contains part of a character."""

    text: str
    tokens: int = 1


@dataclass(slots=True)
class Finished:
    """The last event of a generation."""

    reason: FinishReason
    timings: Timings
    error: RequestError | None = None

    @property
    def prompt_tokens(self) -> int:
        return self.timings.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.timings.completion_tokens


Event = TextDelta | Finished
