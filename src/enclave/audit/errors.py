"""Errors of the audit trail.

``AuditUnavailableError`` is a request error (HTTP 503), so the HTTP layer renders it like
any other. ``AuditError`` covers misuse and broken stores found by the CLI.
"""

from __future__ import annotations

from enclave.errors import EnclaveError, RequestError


class AuditError(EnclaveError):
    """The audit store or its signing key cannot be used as configured."""


class AuditUnavailableError(RequestError):
    """A record could not be committed under the fail-closed policy, so the request is rejected."""

    status_code = 503
    error_type = "server_error"

    def __init__(self, reason: str, retry_after_s: int = 5) -> None:
        super().__init__(
            f"The audit trail cannot record this request ({reason}), so it was rejected. "
            "Retry later; an administrator should check the audit store.",
            code="audit_unavailable",
            retry_after_s=retry_after_s,
        )
        self.reason = reason
