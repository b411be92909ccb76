"""Errors of quantization, conversion and evaluation."""

from __future__ import annotations

from enclave.errors import EnclaveError


class QuantizeError(EnclaveError):
    """A quantization, conversion or evaluation cannot run; the message says why and what to do."""
