"""Deployment checks behind ``enclave doctor``: each returns pass, warn or fail with a reason.

The checks read the settings and the files under the data directory; they create nothing.
Network access is limited to what the operator names: ``--probe`` destinations, the
server's own admin API on request, and the configured rate-limit store.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import psycopg
import redis

from enclave.access.keys import KeyRecord
from enclave.access.store import KeyStoreError, default_store_path, open_key_store
from enclave.config import Settings
from enclave.errors import EnclaveError
from enclave.i18n import _
from enclave.models.registry import ModelRegistry
from enclave.ops import egress

Status = Literal["pass", "warn", "fail"]

MANIFEST_NAME = "SHA256SUMS"
_HASH_CHUNK_BYTES = 1 << 20
_MAX_WALKED_FILES = 10_000
_SHOWN_PATHS = 5


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    """Operator choices beyond the settings: probes, the server to ask, its key, a manifest."""

    probes: tuple[tuple[str, int], ...] = ()
    server_url: str | None = None
    admin_key: str | None = None
    manifest: Path | None = None


def run_checks(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    """Run every check in order; a check that raises becomes a fail result."""
    keys = _KeySummary.read(settings)
    checks: list[Callable[[], list[CheckResult]]] = [
        lambda: [check_listen(settings, keys)],
        lambda: [check_keys(settings, keys)],
        lambda: [check_rate_limits(settings)],
        lambda: [check_egress_guard(settings)],
        lambda: check_probes(options),
        lambda: check_server_probes(settings, options),
        lambda: check_permissions(settings),
        lambda: check_models(settings, options.manifest),
        lambda: [check_privacy(settings)],
    ]
    results: list[CheckResult] = []
    for check in checks:
        try:
            results.extend(check())
        except EnclaveError as exc:
            results.append(CheckResult(_("check failed"), "fail", str(exc)))
    return results


@dataclass(frozen=True, slots=True)
class _KeySummary:
    """The key store as the checks see it; ``error`` is set when it cannot be read."""

    location: str
    records: tuple[KeyRecord, ...] = ()
    error: str | None = None

    @classmethod
    def read(cls, settings: Settings) -> _KeySummary:
        access = settings.access
        if access.store_url is None or access.store_url.startswith("sqlite:///"):
            path = key_store_path(settings)
            if path is not None and not path.exists():
                return cls(str(path))  # not created yet, so no keys; do not create it here
        try:
            store = open_key_store(access, settings.data_dir)
        except KeyStoreError as exc:
            return cls(access.store_url or "", error=str(exc))
        try:
            return cls(store.description, tuple(store.records()))
        except KeyStoreError as exc:
            return cls(store.description, error=str(exc))
        finally:
            store.close()

    def active(self) -> list[KeyRecord]:
        now = time.time()
        return [record for record in self.records if record.status(now) == "active"]


def key_store_path(settings: Settings) -> Path | None:
    """Return the SQLite key store file, None when the store is PostgreSQL."""
    url = settings.access.store_url
    if url is None:
        return default_store_path(settings.data_dir)
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite://"))
    return None


def _address(settings: Settings) -> str:
    host = settings.server.host
    return f"[{host}]:{settings.server.port}" if ":" in host else f"{host}:{settings.server.port}"


def check_listen(settings: Settings, keys: _KeySummary) -> CheckResult:
    name = _("listening address")
    address = _address(settings)
    if settings.server.is_loopback():
        return CheckResult(name, "pass", _("{address}: loopback only", address=address))
    if settings.access.require_keys == "never":
        return CheckResult(name, "fail", _(
            "{address} is reachable from the network and access.require_keys is 'never'; "
            "start-up will refuse", address=address))
    if not keys.active():
        return CheckResult(name, "fail", _(
            "{address} is reachable from the network and no API key is active; start-up will "
            "refuse. Create one with `enclave keys create`", address=address))
    return CheckResult(name, "warn", _(
        "{address} is reachable from the network; API keys are required", address=address))


def check_keys(settings: Settings, keys: _KeySummary) -> CheckResult:
    name = _("API keys")
    if keys.error is not None:
        return CheckResult(name, "fail", keys.error)
    mode = settings.access.require_keys
    active = keys.active()
    admins = sum(1 for record in active if record.role == "admin")
    counts = _("{active} active ({admins} admin) of {total} in {store}", active=len(active),
               admins=admins, total=len(keys.records), store=keys.location)
    if mode == "never":
        return CheckResult(name, "warn", _(
            "not checked (access.require_keys = never): anyone who can reach the server can "
            "use it; {counts}", counts=counts))
    required = mode == "always" or not settings.server.is_loopback() or bool(keys.records)
    if not required:
        return CheckResult(name, "warn", _(
            "not required yet: any local user or process can use the API. Creating a key "
            "makes keys required; {counts}", counts=counts))
    if not active:
        return CheckResult(name, "fail", _("required, but no key is active; {counts}",
                                           counts=counts))
    return CheckResult(name, "pass", _("required; {counts}", counts=counts))


def check_rate_limits(settings: Settings) -> CheckResult:
    name = _("rate-limit store")
    url = settings.access.rate_limit_url
    if url is None:
        return CheckResult(name, "pass", _("in this process (correct for one replica)"))
    try:
        if url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        else:
            psycopg.connect(url, connect_timeout=3).close()
    except (redis.RedisError, psycopg.Error, OSError) as exc:
        return CheckResult(name, "fail", _("{url} cannot be reached: {error}",
                                           url=_without_password(url), error=exc))
    return CheckResult(name, "pass", _("{url} is reachable", url=_without_password(url)))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def check_egress_guard(settings: Settings) -> CheckResult:
    name = _("egress guard")
    if not settings.egress.enabled:
        return CheckResult(name, "warn", _(
            "off (egress.enabled = false): this process may connect anywhere the network "
            "allows; rely on the OS firewall"))
    try:
        egress.check_configured_destinations(settings)
    except EnclaveError as exc:
        return CheckResult(name, "fail", str(exc))
    allowed = ", ".join(settings.egress.allow) or _("nothing")
    return CheckResult(name, "pass", _("on; allowed beyond loopback: {allowed}",
                                       allowed=allowed))


def _probe_result(name: str, result: egress.ProbeResult) -> CheckResult:
    target = f"{result.host}:{result.port}"
    if result.outcome == "blocked":
        return CheckResult(name, "pass", _("{target}: blocked by the egress guard",
                                           target=target))
    if result.outcome == "failed":
        return CheckResult(name, "pass", _("{target}: not reachable ({detail})", target=target,
                                           detail=result.detail))
    if egress.is_local_destination(result.host):
        return CheckResult(name, "pass", _("{target}: reachable (loopback is always allowed)",
                                           target=target))
    if result.guard_enabled:
        return CheckResult(name, "warn", _("{target}: reachable, allowed by egress.allow",
                                           target=target))
    return CheckResult(name, "fail", _("{target}: reachable and the egress guard is off",
                                       target=target))


def check_probes(options: DoctorOptions) -> list[CheckResult]:
    """Try each --probe destination from this process, which runs under the egress guard."""
    name = _("egress from this host")
    return [_probe_result(name, egress.probe(host, port)) for host, port in options.probes]


def check_server_probes(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    """Ask the running server to try each --probe destination (POST /admin/egress/check)."""
    if not options.probes:
        return []
    name = _("egress from the server")
    url = options.server_url or _local_server_url(settings)
    if not options.admin_key:
        return [CheckResult(name, "warn", _(
            "skipped: set ENCLAVE_API_KEY to an admin key to ask the server at {url}",
            url=url))]
    results = []
    headers = {"Authorization": f"Bearer {options.admin_key}"}
    for host, port in options.probes:
        try:
            response = httpx.post(f"{url}/admin/egress/check", headers=headers, timeout=15,
                                  json={"host": host, "port": port})
        except (httpx.HTTPError, OSError) as exc:
            return [CheckResult(name, "warn", _("server at {url} not reachable: {error}",
                                                url=url, error=exc))]
        if response.status_code != 200:
            results.append(CheckResult(name, "warn", _(
                "server at {url} answered {status}: {body}", url=url,
                status=response.status_code, body=response.text[:200])))
            continue
        body: dict[str, Any] = response.json()
        results.append(_probe_result(name, egress.ProbeResult(
            host, port, body["outcome"], body["detail"], body["guard_enabled"])))
    return results


def _local_server_url(settings: Settings) -> str:
    host = settings.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.server.port}"


def check_permissions(settings: Settings) -> list[CheckResult]:
    """Check that the data directory is 0700 and no file in it is open to group or others."""
    name = _("data directory permissions")
    data_dir = settings.data_dir
    if not data_dir.exists():
        return [CheckResult(name, "warn", _(
            "{path} does not exist yet; Enclave creates it with mode 0700", path=data_dir))]
    results = [_mode_result(name, data_dir, "700")]

    store_path = key_store_path(settings)
    if store_path is not None and store_path.exists():
        results.append(_mode_result(_("key store permissions"), store_path, "600"))

    open_paths = [path for path in _walk(data_dir) if _is_open(path)]
    if open_paths:
        shown = ", ".join(f"{path} ({_mode(path)})" for path in open_paths[:_SHOWN_PATHS])
        more = len(open_paths) - _SHOWN_PATHS
        results.append(CheckResult(_("files under the data directory"), "fail", _(
            "{count} readable by group or others: {paths}{more}; run chmod go-rwx on them",
            count=len(open_paths), paths=shown, more=_(" and {more} more", more=more)
            if more > 0 else "")))
    return results


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def _is_open(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)


def _mode_result(name: str, path: Path, expected_mode: str) -> CheckResult:
    if _is_open(path):
        return CheckResult(name, "fail", _(
            "{path} has mode {mode}; run chmod {wanted} {path}", path=path, mode=_mode(path),
            wanted=expected_mode))
    return CheckResult(name, "pass", _("{path} has mode {mode}", path=path, mode=_mode(path)))


def _walk(folder: Path) -> Iterator[Path]:
    count = 0
    for root, directories, files in os.walk(folder):
        for entry in [*directories, *files]:
            path = Path(root) / entry
            if path.is_symlink():
                continue
            yield path
            count += 1
            if count >= _MAX_WALKED_FILES:
                return


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """Read a ``sha256sum`` output file: file name -> lower-case hex digest."""
    entries: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _space, name = line.strip().partition(" ")
        if digest and name:
            entries[Path(name.strip().lstrip("*")).name] = digest.lower()
    return entries


def check_models(settings: Settings, manifest: Path | None) -> list[CheckResult]:
    """Hash each served GGUF file and compare it with a SHA256SUMS manifest if one exists."""
    name = _("model checksum")
    try:
        entries = ModelRegistry(settings.engine).entries()
    except EnclaveError as exc:
        return [CheckResult(name, "fail", str(exc))]
    results = []
    for entry in entries:
        digest = sha256_file(entry.path)
        manifest_path = manifest or entry.path.parent / MANIFEST_NAME
        if not manifest_path.is_file():
            results.append(CheckResult(name, "warn", _(
                "{model}: SHA-256 {digest}; no manifest at {manifest} to compare with "
                "(create one with sha256sum)", model=entry.id, digest=digest,
                manifest=manifest_path)))
            continue
        recorded = read_manifest(manifest_path).get(entry.path.name)
        if recorded is None:
            results.append(CheckResult(name, "warn", _(
                "{model}: SHA-256 {digest}; {manifest} has no entry for {file}",
                model=entry.id, digest=digest, manifest=manifest_path, file=entry.path.name)))
        elif recorded != digest:
            results.append(CheckResult(name, "fail", _(
                "{model}: SHA-256 {digest} differs from {recorded} recorded in {manifest}",
                model=entry.id, digest=digest, recorded=recorded, manifest=manifest_path)))
        else:
            results.append(CheckResult(name, "pass", _(
                "{model}: SHA-256 {digest} matches {manifest}", model=entry.id, digest=digest,
                manifest=manifest_path)))
    return results


def check_privacy(settings: Settings) -> CheckResult:
    """Report the privacy settings in force, if this build has them."""
    name = _("privacy profile")
    privacy = getattr(settings, "privacy", None)
    if privacy is None:
        return CheckResult(name, "warn", _("not configured"))
    values = privacy.model_dump(mode="json")
    parts = [f"{key}={values[key]}" for key in ("profile", "mode") if key in values]
    detail = ", ".join(parts) or _("configured")
    return CheckResult(name, "warn" if values.get("mode") == "off" else "pass", detail)
