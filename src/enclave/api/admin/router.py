"""Routes of the admin API: list, create, revoke and rotate keys; check the egress guard."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from enclave.access import manage
from enclave.access.control import AccessControl
from enclave.api.admin.dependencies import require_admin
from enclave.api.admin.protocol import CreateKeyRequest, EgressCheckRequest, RotateKeyRequest
from enclave.api.errors import parse_body
from enclave.api.state import AppState, StateDep
from enclave.ops import egress

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


def _access(state: AppState) -> AccessControl:
    if state.access is None:
        raise RuntimeError("access control is not set up on this app")
    return state.access


@router.get("/keys")
async def list_keys(state: StateDep) -> dict[str, Any]:
    records = await asyncio.to_thread(_access(state).store.records)
    now = time.time()
    return {"object": "list", "data": [manage.key_view(record, now) for record in records]}


@router.post("/keys", status_code=201)
async def create_key(request: Request, state: StateDep) -> JSONResponse:
    body = await parse_body(request, CreateKeyRequest)
    access = _access(state)
    issued = await asyncio.to_thread(manage.create_key, access.store, body.spec(time.time()))
    access.forget(issued.record.prefix)
    return JSONResponse({**manage.key_view(issued.record), "key": issued.key}, status_code=201)


@router.get("/keys/{prefix}")
async def get_key(prefix: str, state: StateDep) -> dict[str, Any]:
    record = await asyncio.to_thread(manage.find_key, _access(state).store, prefix)
    return manage.key_view(record)


@router.delete("/keys/{prefix}")
async def revoke_key(prefix: str, state: StateDep) -> dict[str, Any]:
    access = _access(state)
    record = await asyncio.to_thread(manage.revoke_key, access.store, prefix)
    access.forget(record.prefix)
    return manage.key_view(record)


@router.post("/keys/{prefix}/rotate", status_code=201)
async def rotate_key(prefix: str, request: Request, state: StateDep) -> JSONResponse:
    body = await parse_body(request, RotateKeyRequest) if await request.body() else (
        RotateKeyRequest())
    access = _access(state)
    issued, old = await asyncio.to_thread(manage.rotate_key, access.store, prefix, body.grace_s)
    access.forget(old.prefix)
    payload = {**manage.key_view(issued.record), "key": issued.key,
               "replaces": manage.key_view(old)}
    return JSONResponse(payload, status_code=201)


@router.post("/egress/check")
async def check_egress(request: Request) -> dict[str, Any]:
    """Try a TCP connection to an operator-named destination from inside the server."""
    body = await parse_body(request, EgressCheckRequest)
    result = await asyncio.to_thread(egress.probe, body.host, body.port, body.timeout_s)
    return dataclasses.asdict(result)
