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
- ``trail.stats.snapshot()`` returns the counters for metrics: records_written,
  write_failures, write_timeouts, records_spooled, records_replayed, records_dropped and
  verify_failures.
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
