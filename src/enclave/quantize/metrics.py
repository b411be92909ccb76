"""Quality metrics of a model's next-token distributions against a reference's.

All functions take logits or log-probabilities of shape (positions, vocabulary) for the same
token ids; row ``i`` predicts token ``i + 1`` of the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float32]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


def log_softmax(logits: FloatArray) -> FloatArray:
    """Return log-probabilities, computed stably by subtracting each row's maximum first."""
    shifted = logits.astype(np.float32, copy=True)
    shifted -= shifted.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True, dtype=np.float64))
    shifted -= log_norm.astype(np.float32)
    return shifted


def target_log_probs(log_probs: FloatArray, targets: IntArray) -> np.ndarray[Any, Any]:
    """Return the log-probability each row gives its target token."""
    return log_probs[np.arange(len(targets)), targets].astype(np.float64)


def kl_divergence(reference: FloatArray, candidate: FloatArray) -> np.ndarray[Any, Any]:
    """Return KL(reference || candidate) per row, in nats, from log-probabilities."""
    probabilities = np.exp(reference)
    return np.asarray(np.sum(probabilities * (reference - candidate), axis=1, dtype=np.float64))


@dataclass(slots=True)
class Accumulator:
    """Sums over all scored positions of every window, for one model."""

    positions: int = 0
    neg_log_likelihood: float = 0.0
    kld_sum: float = 0.0
    top1_matches: int = 0

    def add(self, log_probs: FloatArray, targets: IntArray, reference: FloatArray | None,
            reference_top1: IntArray | None) -> None:
        """Add one window; ``reference`` is None when scoring the reference itself."""
        self.positions += len(targets)
        self.neg_log_likelihood -= float(target_log_probs(log_probs, targets).sum())
        if reference is not None and reference_top1 is not None:
            self.kld_sum += float(np.maximum(kl_divergence(reference, log_probs), 0.0).sum())
            self.top1_matches += int((log_probs.argmax(axis=1) == reference_top1).sum())
        else:
            self.top1_matches += len(targets)

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.neg_log_likelihood / max(1, self.positions)))

    @property
    def mean_kld(self) -> float:
        return self.kld_sum / max(1, self.positions)

    @property
    def top1_agreement(self) -> float:
        return self.top1_matches / max(1, self.positions)
