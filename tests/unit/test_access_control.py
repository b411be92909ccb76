"""AccessControl: when keys are required, which keys pass, caching, and the listen rule."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from enclave.access import manage
from enclave.access.control import AccessControl, AccessStoreUnavailableError
from enclave.access.keys import ANONYMOUS, Principal
from enclave.access.limits import InProcessRateLimiter
from enclave.access.limits_redis import RedisRateLimiter
from enclave.access.listen import check_listen_address
from enclave.access.settings import AccessSettings, FailurePolicy, RequireKeys
from enclave.access.store import SqliteKeyStore
from enclave.config import Settings
from enclave.errors import AuthenticationError, ConfigError, PermissionDeniedError, RateLimitError

CHERRY_STUDIO_KEY = "sk-anything-the-user-typed"


def make_control(tmp_path: Path, *, mode: RequireKeys = "auto", loopback: bool = True,
                 cache_ttl_s: float = 5.0) -> AccessControl:
    settings = AccessSettings(require_keys=mode, cache_ttl_s=cache_ttl_s)
    return AccessControl(settings, SqliteKeyStore(tmp_path / "keys.db"), InProcessRateLimiter(),
                         listens_on_loopback=loopback)


def authenticate(control: AccessControl, key: str | None, admin: bool = False) -> Principal:
    return asyncio.run(control.authenticate(key, admin=admin))


def new_key(control: AccessControl, **fields: object) -> str:
    spec = manage.KeySpec(**{"user_id": "alice", **fields})  # type: ignore[arg-type]
    return manage.create_key(control.store, spec).key


@pytest.mark.parametrize(("mode", "loopback", "has_keys", "required"), [
    ("auto", True, False, False),
    ("auto", True, True, True),
    ("auto", False, False, True),
    ("always", True, False, True),
    ("never", True, True, False),
    ("never", False, True, True),  # start-up rejects this; the middleware stays strict too
])
def test_keys_required_by_mode(tmp_path: Path, mode: RequireKeys, loopback: bool,
                               has_keys: bool, required: bool) -> None:
    control = make_control(tmp_path, mode=mode, loopback=loopback)
    if has_keys:
        new_key(control)
    assert asyncio.run(control.keys_required()) is required


def test_keyless_loopback_ignores_presented_key(tmp_path: Path) -> None:
    control = make_control(tmp_path)
    assert authenticate(control, CHERRY_STUDIO_KEY) is ANONYMOUS
    assert authenticate(control, None) is ANONYMOUS


def test_valid_key_gives_its_principal(tmp_path: Path) -> None:
    control = make_control(tmp_path)
    key = new_key(control, name="Alice", models=("m*",), requests_per_minute=10)
    principal = authenticate(control, key)
    assert principal.user_id == "alice"
    assert principal.key_prefix == key.split("-")[2]
    assert principal.models == ("m*",)
    assert principal.requests_per_minute == 10


@pytest.mark.parametrize(("presented", "code"), [
    (None, "missing_api_key"),
    ("", "missing_api_key"),
    (CHERRY_STUDIO_KEY, "invalid_api_key"),
    ("sk-enc-0123456789ab-" + "a" * 43, "invalid_api_key"),
])
def test_bad_key_is_rejected(tmp_path: Path, presented: str | None, code: str) -> None:
    control = make_control(tmp_path)
    new_key(control)
    with pytest.raises(AuthenticationError) as caught:
        authenticate(control, presented)
    assert caught.value.code == code
    assert caught.value.status_code == 401


def test_wrong_secret_with_real_prefix_is_rejected(tmp_path: Path) -> None:
    control = make_control(tmp_path)
    key = new_key(control)
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(AuthenticationError) as caught:
        authenticate(control, forged)
    assert caught.value.code == "invalid_api_key"


def test_revoked_and_expired_keys_are_rejected(tmp_path: Path) -> None:
    control = make_control(tmp_path, cache_ttl_s=0)
    revoked = new_key(control)
    manage.revoke_key(control.store, revoked)
    expiring = new_key(control, expires_at=time.time() + 0.3)
    assert authenticate(control, expiring).user_id == "alice"
    time.sleep(0.35)

    for key, code in ((revoked, "revoked_api_key"), (expiring, "expired_api_key")):
        with pytest.raises(AuthenticationError) as caught:
            authenticate(control, key)
        assert caught.value.code == code


def test_revocation_elsewhere_applies_within_cache_ttl(tmp_path: Path) -> None:
    control = make_control(tmp_path, cache_ttl_s=0.5)
    key = new_key(control)
    authenticate(control, key)  # cached now
    other_process_store = SqliteKeyStore(tmp_path / "keys.db")
    manage.revoke_key(other_process_store, key)

    assert authenticate(control, key).user_id == "alice"  # still cached
    time.sleep(0.5)
    with pytest.raises(AuthenticationError):
        authenticate(control, key)


def test_forget_applies_revocation_at_once(tmp_path: Path) -> None:
    control = make_control(tmp_path, cache_ttl_s=60)
    key = new_key(control)
    authenticate(control, key)
    record = manage.revoke_key(control.store, key)
    control.forget(record.prefix)
    with pytest.raises(AuthenticationError):
        authenticate(control, key)


def test_admin_role_required_in_every_mode(tmp_path: Path) -> None:
    control = make_control(tmp_path, mode="never")
    user_key = new_key(control)
    admin_key = new_key(control, role="admin")

    with pytest.raises(AuthenticationError):
        authenticate(control, None, admin=True)
    with pytest.raises(PermissionDeniedError) as caught:
        authenticate(control, user_key, admin=True)
    assert caught.value.code == "admin_required"
    assert authenticate(control, admin_key, admin=True).is_admin


def test_request_limit_gives_retry_after(tmp_path: Path) -> None:
    control = make_control(tmp_path)
    key = new_key(control, requests_per_minute=2)
    authenticate(control, key)
    authenticate(control, key)
    with pytest.raises(RateLimitError) as caught:
        authenticate(control, key)
    assert caught.value.code == "requests_per_minute_exceeded"
    assert caught.value.retry_after_s == 30


def test_token_limit_applies_to_next_request(tmp_path: Path) -> None:
    control = make_control(tmp_path)
    key = new_key(control, tokens_per_minute=100)
    principal = authenticate(control, key)
    asyncio.run(control.charge_tokens(principal, 130))
    with pytest.raises(RateLimitError) as caught:
        authenticate(control, key)
    assert caught.value.code == "tokens_per_minute_exceeded"
    assert caught.value.retry_after_s == 18


def listen_settings(tmp_path: Path, host: str, mode: RequireKeys = "auto") -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    settings.server.host = host
    settings.access.require_keys = mode
    return settings


def test_listen_rule_allows_loopback_without_keys(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        check_listen_address(listen_settings(tmp_path, host, "never"))


def test_listen_rule_rejects_network_without_keys(tmp_path: Path) -> None:
    settings = listen_settings(tmp_path, "0.0.0.0")
    with pytest.raises(ConfigError, match="no active key"):
        check_listen_address(settings)


def test_listen_rule_rejects_never_off_loopback(tmp_path: Path) -> None:
    settings = listen_settings(tmp_path, "0.0.0.0", "never")
    with pytest.raises(ConfigError, match="require_keys"):
        check_listen_address(settings)


def test_listen_rule_allows_network_with_active_key(tmp_path: Path) -> None:
    settings = listen_settings(tmp_path, "0.0.0.0")
    store = SqliteKeyStore(tmp_path / "data" / "access" / "keys.db")
    record = manage.create_key(store, manage.KeySpec(user_id="alice")).record
    check_listen_address(settings)

    manage.revoke_key(store, record.prefix)
    with pytest.raises(ConfigError):
        check_listen_address(settings)


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("policy", "rejected"), [("fail-closed", True), ("fail-open", False)])
def test_unreachable_limit_store_follows_policy(tmp_path: Path, policy: FailurePolicy,
                                                rejected: bool) -> None:
    settings = AccessSettings(rate_limit_failure_policy=policy)
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{dead_port()}/0")
    control = AccessControl(settings, SqliteKeyStore(tmp_path / "keys.db"), limiter,
                            listens_on_loopback=True)
    key = new_key(control, requests_per_minute=10)

    if rejected:
        with pytest.raises(AccessStoreUnavailableError) as caught:
            authenticate(control, key)
        assert caught.value.status_code == 503
        assert caught.value.retry_after_s == 5
    else:
        assert authenticate(control, key).user_id == "alice"


def test_unreadable_key_store_gives_503(tmp_path: Path) -> None:
    control = make_control(tmp_path, cache_ttl_s=0)
    key = new_key(control)
    control.store.close()
    with pytest.raises(AccessStoreUnavailableError) as caught:
        authenticate(control, key)
    assert caught.value.code == "key_store_unavailable"
