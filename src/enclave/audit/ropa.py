"""The record of processing activities (GDPR Art. 30(1)) for the audit trail, from settings.

Fields the settings leave empty are derived from what the trail actually stores and how it
is configured, so the document stays true when the settings change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enclave.audit.settings import AuditSettings

Translate = Callable[..., str]


def _english(message: str, /, **values: Any) -> str:
    return message.format(**values) if values else message


def derived_data_categories(settings: AuditSettings, translate: Translate = _english) -> list[str]:
    """List the personal data categories that the configured records contain."""
    if settings.digest_only:
        query = translate("SHA-256 digest of the query text (no query text is stored)")
    else:
        query = translate("First {chars} characters of the query after PII redaction, and the "
                          "SHA-256 digest of the query", chars=settings.excerpt_chars)
    return [
        translate("User id and API key prefix (never the key secret)"),
        translate("Client network address"),
        translate("Request metadata: time, route, model, HTTP status or error code, latency, "
                  "token and character counts"),
        query,
        translate("Kinds and counts of personal data detected in queries and responses (not "
                  "the data itself)"),
        translate("Privacy profile in force"),
    ]


def derived_security_measures(settings: AuditSettings, store_kind: str,
                              translate: Translate = _english) -> list[str]:
    """List the technical measures that protect the records as configured."""
    measures = [
        translate("Processing on the controller's own hardware; records are not sent to any "
                  "third party"),
        translate("Append-only SHA-256 hash chain over every record; `enclave audit verify` "
                  "detects edited, deleted, inserted and reordered records"),
        translate("Ed25519-signed checkpoints every {records} records or {seconds:g} s",
                  records=settings.checkpoint_interval, seconds=settings.checkpoint_max_age_s),
    ]
    if store_kind == "sqlite":
        measures.append(translate("Store and signing key readable by the service account only "
                                  "(file mode 0600)"))
    else:
        measures.append(translate("Store in PostgreSQL under its access control; signing key "
                                  "readable by the service account only (file mode 0600)"))
    if settings.failure_policy == "fail-closed":
        measures.append(translate("Requests are rejected when their record cannot be written "
                                  "(fail-closed)"))
    else:
        measures.append(translate("Records that cannot be written are spooled and written "
                                  "later (fail-open)"))
    return measures


def build_ropa(
    settings: AuditSettings, store_kind: str, translate: Translate = _english
) -> dict[str, Any]:
    """Return the record of processing activities as a dict of its Art. 30(1) entries."""
    return {
        "processing_activity": translate("Audit trail of requests to locally served language "
                                         "models (Enclave)"),
        "controller": settings.controller or None,
        "purposes": list(settings.purposes),
        "data_subjects": list(settings.data_subjects),
        "data_categories": list(settings.data_categories
                                or derived_data_categories(settings, translate)),
        "recipients": [translate("None: all processing is local")],
        "third_country_transfers": translate("None"),
        "retention": translate("{months} months; older records are removed by `enclave audit "
                               "purge`", months=settings.retention_months),
        "security_measures": list(settings.security_measures
                                  or derived_security_measures(settings, store_kind, translate)),
    }


def render_markdown(ropa: dict[str, Any], translate: Translate = _english) -> str:
    """Render the record of processing activities as a markdown document."""
    sections = [
        ("processing_activity", translate("Processing activity")),
        ("controller", translate("Controller")),
        ("purposes", translate("Purposes of the processing")),
        ("data_subjects", translate("Categories of data subjects")),
        ("data_categories", translate("Categories of personal data")),
        ("recipients", translate("Recipients")),
        ("third_country_transfers", translate("Transfers to third countries")),
        ("retention", translate("Time limits for erasure")),
        ("security_measures", translate("Technical and organisational security measures")),
    ]
    lines = [f"# {translate('Record of processing activities (GDPR Art. 30)')}", ""]
    for key, title in sections:
        value = ropa[key]
        lines.append(f"## {title}")
        lines.append("")
        if value is None:
            lines.append(translate("Not set: add it as audit.controller in the settings file."))
        elif isinstance(value, list):
            lines.extend(f"- {item}" for item in value)
        else:
            lines.append(str(value))
        lines.append("")
    return "\n".join(lines)
