"""The audit trail as a request observer: one open and one close record per request.

* An accepted request gets its ``open`` record in ``request_accepted``, which waits for the
  commit before generation starts. Under ``fail-closed`` a failed commit raises
  ``AuditUnavailableError``, so the request ends with 503 ``audit_unavailable`` and never
  reaches the model. Its ``close`` record is written in ``request_finished``, after the
  last byte was sent. A close that cannot be committed is logged at ERROR and counted by the
  trail (``write_failures_total``, ``write_timeouts_total``); it cannot change a response
  that was already sent.
* A request that access control turned away (401, 403, 429) gets both records when it ends,
  because failed and refused attempts are what an investigation of key misuse looks for.
  Their ``user_id`` is empty when the key was not verified, and ``key_prefix`` is the public
  prefix of the key presented, if it had the shape of an Enclave key.
* Other requests that never reached ``accept()`` (malformed bodies, unknown routes, health
  probes, metrics scrapes) are not recorded; the access log and the metrics count them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from enclave.api.lifecycle import RequestRecord
from enclave.api.middleware import REJECTED_STATUSES
from enclave.audit import AuditTrail, AuditUnavailableError, Principal, RequestClosed, RequestOpened
from enclave.audit.trail import AppendStatus

logger = logging.getLogger(__name__)

OPENED_ATTRIBUTE = "audit_opened"


class AuditObserver:
    """Writes the audit records of each request through an ``AuditTrail``."""

    def __init__(self, trail: AuditTrail, privacy_profile: str | None) -> None:
        self.trail = trail
        self.privacy_profile = privacy_profile

    async def request_accepted(self, record: RequestRecord) -> None:
        """Commit the open record; raise AuditUnavailableError under fail-closed."""
        result = await self.trail.open_request_async(self._opened(record))
        record.attributes[OPENED_ATTRIBUTE] = True
        if result.status is AppendStatus.COMMITTED:
            logger.debug("Audit open record committed at seq %d", result.seq)

    async def request_finished(self, record: RequestRecord) -> None:
        """Commit the close record, and the open record first for a rejected request."""
        try:
            if record.attributes.get(OPENED_ATTRIBUTE):
                await self.trail.complete_request_async(self._closed(record))
            elif record.status in REJECTED_STATUSES:
                await self.trail.open_request_async(self._opened(record))
                await self.trail.complete_request_async(self._closed(record))
        except AuditUnavailableError as error:
            logger.error("The audit record of a finished request (status %d) was not "
                         "committed: %s", record.status, error.reason)

    def _opened(self, record: RequestRecord) -> RequestOpened:
        return RequestOpened(
            request_id=record.request_id,
            principal=_principal(record),
            route=record.route,
            model=record.model or "",
            query=record.input_text or "",
            client=record.client,
            pii=record.attributes.get("pii", {}),
            privacy_profile=record.attributes.get("privacy_mode", self.privacy_profile),
        )

    def _closed(self, record: RequestRecord) -> RequestClosed:
        since = record.accepted_at if record.accepted_at is not None else record.started
        return RequestClosed(
            request_id=record.request_id,
            status=record.status,
            error_code=record.error_code,
            response_chars=record.output_chars,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            latency_ms=(time.perf_counter() - since) * 1000.0,
            pii=record.attributes.get("pii_response", {}),
        )


def _principal(record: RequestRecord) -> Principal:
    principal: Any = record.principal
    if principal is not None:
        return Principal(str(principal.user_id), principal.key_prefix)
    return Principal("", record.attributes.get("key_prefix"))
