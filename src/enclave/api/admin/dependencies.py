"""The admin-key requirement as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from enclave.access.keys import Principal
from enclave.access.middleware import PRINCIPAL_STATE_KEY, presented_key
from enclave.api.state import get_state


async def require_admin(request: Request) -> Principal:
    """Return the admin principal of a request; raise 401, 403 or 429 otherwise.

    Under ``/admin`` the access middleware has already authenticated the request; elsewhere
    (for example ``/metrics``) the key is checked here, rate limits included.
    """
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if isinstance(principal, Principal) and principal.is_admin:
        return principal
    access = get_state(request).access
    if access is None:
        raise RuntimeError("access control is not set up on this app")
    principal = await access.authenticate(presented_key(request.scope), admin=True)
    request.scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
