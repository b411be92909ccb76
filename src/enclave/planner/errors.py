"""Errors of the hardware planner."""

from __future__ import annotations

from enclave.errors import EnclaveError


class PlannerError(EnclaveError):
    """The model or the requested configuration cannot be planned; the message says why."""
