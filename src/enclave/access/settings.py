"""Settings of API keys and rate limits: the ``[access]`` section of the settings file.

Example::

    [access]
    require_keys = "auto"        # auto | always | never
    store_url = "postgresql://enclave@db.internal/enclave"
    rate_limit_url = "redis://127.0.0.1:6379/0"
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from enclave.section import Section

RequireKeys = Literal["auto", "always", "never"]
FailurePolicy = Literal["fail-closed", "fail-open"]

_STORE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
_LIMIT_SCHEMES = ("redis://", "rediss://", "postgresql://", "postgres://")


class AccessSettings(Section):
    require_keys: RequireKeys = Field(
        "auto",
        description="auto: keys are required when the server listens on anything but "
        "loopback, or once any key has been created (revoked and expired ones included); "
        "always: every API request needs a key; never: keys are not checked, which start-up "
        "rejects unless the server listens on loopback only. The admin API always needs an "
        "admin key.",
    )
    store_url: str | None = Field(
        None,
        description="Where keys are stored: sqlite:///ABSOLUTE/PATH or "
        "postgresql://USER@HOST/DB (shared by several replicas). Default: SQLite file "
        "access/keys.db under data_dir.",
    )
    cache_ttl_s: float = Field(
        5.0, ge=0.0, le=300.0,
        description="Seconds a key looked up in the store is reused without asking the store "
        "again. A key revoked elsewhere stops working within this time; 0 asks the store on "
        "every request.",
    )
    rate_limit_url: str | None = Field(
        None,
        description="Where rate-limit counters live: redis://HOST:PORT/DB or "
        "postgresql://USER@HOST/DB, shared by several replicas. Default: in this process, "
        "which is correct for one replica only.",
    )
    rate_limit_failure_policy: FailurePolicy = Field(
        "fail-closed",
        description="fail-closed rejects requests with 503 while the rate-limit store cannot "
        "be reached; fail-open serves them without limits and logs the failure.",
    )

    @field_validator("store_url")
    @classmethod
    def _known_store_scheme(cls, value: str | None) -> str | None:
        if value is None or value.startswith(_STORE_SCHEMES):
            return value
        raise ValueError(
            "unsupported key store URL; use sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB"
        )

    @field_validator("rate_limit_url")
    @classmethod
    def _known_limit_scheme(cls, value: str | None) -> str | None:
        if value is None or value.startswith(_LIMIT_SCHEMES):
            return value
        raise ValueError(
            "unsupported rate-limit store URL; use redis://HOST:PORT/DB or "
            "postgresql://USER@HOST/DB, or leave it unset for in-process counters"
        )
