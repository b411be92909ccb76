"""Settings of the audit trail: the ``[audit]`` section of the settings file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from enclave.section import Section

DEFAULT_PURPOSES = [
    "Accountability: record who sent which request to which model, and its outcome",
    "Security: detect misuse of API keys and investigate incidents",
]
DEFAULT_DATA_SUBJECTS = ["Users of the API (employees and service accounts of the controller)"]

FailurePolicy = Literal["fail-closed", "fail-open"]


class AuditSettings(Section):
    enabled: bool = Field(True, description="Write one audit record per accepted request.")
    store_url: str | None = Field(
        None,
        description="Where records are stored: sqlite:///ABSOLUTE/PATH or "
        "postgresql://USER@HOST/DB. Default: SQLite file audit/audit.db under data_dir.",
    )
    signing_key: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs checkpoints; created with mode 0600 "
        "if missing. Default: audit/signing-key.pem under data_dir.",
    )
    excerpt_chars: int = Field(50, ge=0, le=10_000, description="Characters of the query, "
                               "after PII redaction, stored in the open record.")
    digest_only: bool = Field(False, description="Store only the SHA-256 digest of the query, "
                              "no excerpt.")
    checkpoint_interval: int = Field(1000, ge=1, description="Records between two signed "
                                     "checkpoints.")
    checkpoint_max_age_s: float = Field(60.0, gt=0, description="Seconds after which new "
                                        "records get a checkpoint even if fewer than "
                                        "checkpoint_interval were written.")
    retention_months: int = Field(36, ge=1, description="Months a record is kept before "
                                  "`enclave audit purge` may remove it.")
    failure_policy: FailurePolicy = Field(
        "fail-closed",
        description="fail-closed rejects a request whose record cannot be written (HTTP 503); "
        "fail-open serves it, spools the record and counts the failure.",
    )
    spool_max_records: int = Field(10_000, ge=1, description="Records kept in memory under "
                                   "fail-open while the store cannot be written.")
    write_timeout_s: float = Field(5.0, gt=0, description="Seconds a request waits for its "
                                   "record to be committed.")
    sqlite_synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="normal: a committed record survives a crash of the process (SIGKILL); "
        "full: it also survives power loss, at the cost of one fsync per commit.",
    )
    controller: str = Field("", description="Name and contact of the data controller, for the "
                            "record of processing activities.")
    purposes: list[str] = Field(default_factory=lambda: list(DEFAULT_PURPOSES),
                                description="Purposes of the processing.")
    data_subjects: list[str] = Field(default_factory=lambda: list(DEFAULT_DATA_SUBJECTS),
                                     description="Categories of data subjects.")
    data_categories: list[str] | None = Field(None, description="Categories of personal data. "
                                              "Default: derived from the record fields.")
    security_measures: list[str] | None = Field(None, description="Technical and "
                                                "organisational measures. Default: derived "
                                                "from these settings.")

    @field_validator("store_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith("sqlite:///") or value.startswith(("postgresql://", "postgres://")):
            return value
        raise ValueError(
            "unsupported store URL; use sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB"
        )
