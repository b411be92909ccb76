"""Request and response bodies of the admin API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from enclave.access.manage import InvalidKeySpecError, KeySpec


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str
    name: str = ""
    role: Literal["user", "admin"] = "user"
    models: list[str] = Field(default_factory=lambda: ["*"])
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    expires_at: datetime | None = Field(None, description="ISO 8601 time; UTC if no offset.")
    expires_in_days: float | None = Field(None, gt=0)

    def spec(self, now: float) -> KeySpec:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise InvalidKeySpecError("Set expires_at or expires_in_days, not both.",
                                      param="expires_at")
        expires_at = None
        if self.expires_at is not None:
            moment = self.expires_at
            expires_at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        elif self.expires_in_days is not None:
            expires_at = now + self.expires_in_days * 86_400
        return KeySpec(user_id=self.user_id, name=self.name, role=self.role,
                       models=tuple(self.models), requests_per_minute=self.requests_per_minute,
                       tokens_per_minute=self.tokens_per_minute, expires_at=expires_at)


class RotateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float = Field(0.0, ge=0, description="Seconds the old key keeps working.")


class EgressCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(3.0, gt=0, le=10)
