"""Tamper-evident audit trail: one hash-chained record pair per request.

Interface for the request path::

    from enclave.audit import AuditTrail, Principal, RequestClosed, RequestOpened

    trail = AuditTrail(settings.audit, settings.data_dir)   # once, at start-up
    await trail.open_request_async(RequestOpened(
        request_id=request_id, principal=Principal(user_id, key_prefix),
        route="/v1/chat/completions", model=model_id, query=redacted_prompt,
        client=client_host, pii={"EMAIL": 2}, privacy_profile="finance"))
    ...  # generate
    await trail.complete_request_async(RequestClosed(
        request_id=request_id, status=200, response_chars=len(text),
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        latency_ms=elapsed_ms))
    trail.close()                                          # at shutdown

- Create the trail only when ``settings.audit.enabled`` is true.
- ``open_request`` must run before generation starts. It returns once the ``open`` record
  is committed, so a request whose process dies mid-generation still has a record (an
  ``open`` without a ``close`` reads as interrupted). ``complete_request`` records the
  outcome, failures and cancellations included (status 499 is the usual code for a client
  that went away).
- The ``*_async`` variants wait without blocking the event loop; the plain ones block the
  calling thread. All are thread-safe.
- Under ``failure_policy = "fail-closed"`` (the default) both raise ``AuditUnavailableError``
  when the record cannot be committed within ``write_timeout_s``. It is a ``RequestError``
  with status 503, so the HTTP layer renders it like any other request error. Under
  ``fail-open`` they return an ``AppendResult`` whose status is ``spooled`` or ``pending``.
- ``trail.stats()`` returns the figures for metrics (register the trail in
  ``AppState.stats_providers["audit"]``): the counters records_written_total,
  write_failures_total, write_timeouts_total, records_spooled_total,
  records_replayed_total, records_dropped_total and verify_failures_total, and the gauge
  spooled_records. ``trail.counters`` contains the same counters as attributes.
- ``query`` must already be redacted: the trail stores its first ``excerpt_chars``
  characters (unless ``digest_only``) and its SHA-256 digest. ``Principal.key_prefix`` is the
  public prefix of the API key; a value longer than 16 characters is rejected as a
  probable secret.

Layout: ``records`` (schema), ``chain`` (hashing), ``signing`` (checkpoints), ``store``,
``sqlite_store`` and ``postgres_store`` (storage), ``writer`` (group commit), ``trail``
(this interface), ``verify``, ``retention``, ``export`` and ``ropa`` (the CLI's work).
"""

from enclave.audit.errors import AuditError, AuditUnavailableError
from enclave.audit.records import Principal, RequestClosed, RequestOpened
from enclave.audit.settings import AuditSettings
from enclave.audit.trail import AppendResult, AppendStatus, AuditTrail

__all__ = [
    "AppendResult",
    "AppendStatus",
    "AuditError",
    "AuditSettings",
    "AuditTrail",
    "AuditUnavailableError",
    "Principal",
    "RequestClosed",
    "RequestOpened",
]
