"""Egress guard: the process refuses outbound connections except to loopback and an allow-list.

``install()`` adds a Python audit hook (``sys.addaudithook``, PEP 578) that runs before every
``socket.connect``, ``socket.sendto`` and ``socket.sendmsg`` with a destination, and before
every name lookup (``socket.getaddrinfo``, ``gethostbyname``, ``gethostbyaddr``,
``getnameinfo``). A destination that is neither loopback nor on ``egress.allow`` raises
``EgressBlockedError`` (a ``PermissionError``, so libraries treat it as a failed connection)
before the system call, so no packet leaves. Each blocked attempt is logged, at most once per
``egress.log_interval_s`` per destination, with the number of repeats.

What the hook cannot see, because it watches Python's socket module only:

* C libraries that open their own sockets: libpq (psycopg's PostgreSQL connections),
  libcurl, gRPC core, uvloop. Enclave runs on the standard asyncio event loop, not uvloop.
* Child processes (``subprocess``, ``os.system``) and raw system calls made through ctypes.
* The name lookup inside ``socket.connect((hostname, port))`` itself, which CPython performs
  before it raises the audit event. The connection is still blocked, but the DNS query for
  the name has gone out. Libraries that call ``getaddrinfo`` first (``create_connection``,
  asyncio, httpx, urllib3) are stopped before the lookup.
* Code in the same process that wants to get around it: an audit hook cannot be removed,
  but ``install()`` can replace its policy. The guard stops accidental egress (telemetry,
  model-hub downloads, a mistyped URL), not a hostile extension.

The operating system covers all of these: a firewall rule for the service user, a network
namespace, or systemd's ``IPAddressDeny=any`` with ``IPAddressAllow=localhost`` plus the
hosts of ``egress.allow``. docs/security.md has examples.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from enclave.errors import ConfigError, EnclaveError
from enclave.i18n import _
from enclave.section import Section

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*")
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379,
                  "http": 80, "https": 443}
_LOOKUP_EVENTS = frozenset({"socket.getaddrinfo", "socket.gethostbyname",
                            "socket.gethostbyname_ex"})
_REVERSE_EVENTS = frozenset({"socket.gethostbyaddr", "socket.getnameinfo"})
_SEND_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_LOCAL_FAMILIES = frozenset({getattr(socket, "AF_UNIX", -1), getattr(socket, "AF_NETLINK", -1)})
_MAX_LOGGED_DESTINATIONS = 1024


class EgressBlockedError(PermissionError, EnclaveError):
    """An outbound connection or name lookup that the egress guard refused."""


def parse_rule(text: str) -> AllowRule:
    """Parse an allow-list entry: HOST, IP or CIDR, each optionally with :PORT.

    IPv6 addresses take brackets when a port follows: ``[fd00::5]:5432``.
    """
    entry = text.strip()
    port_text: str | None = None
    if entry.startswith("["):
        address, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid allow entry {text!r}: write an IPv6 address as [ADDR] "
                             "or [ADDR]:PORT")
        port_text = rest[1:] if rest else None
    elif entry.count(":") == 1:
        address, port_text = entry.split(":")
    else:
        address = entry

    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"invalid port in allow entry {text!r}: use 1 to 65535")
        port = int(port_text)
    try:
        return AllowRule(entry, network=ipaddress.ip_network(address, strict=False), port=port)
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(address.rstrip(".")):
        raise ValueError(f"invalid allow entry {text!r}: use a host name, an IP address or a "
                         "CIDR block, optionally followed by :PORT")
    return AllowRule(entry, host=_normal_name(address), port=port)


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One allow-list entry: a host name or an IP network, and a port (None for any)."""

    text: str
    network: IPNetwork | None = None
    host: str | None = None
    port: int | None = None

    def allows_port(self, port: int | None) -> bool:
        return self.port is None or port is None or self.port == port


class EgressSettings(Section):
    enabled: bool = Field(True, description="Refuse outbound connections from this process "
                          "except to loopback and the allow-list.")
    allow: list[str] = Field(
        default_factory=list,
        description="Destinations that may be reached: host names, IP addresses or CIDR "
        "blocks, each optionally with :PORT (e.g. 10.0.0.5:5432, db.internal:5432, "
        "10.1.0.0/16, [fd00::5]:6379). Host names are resolved once, at start-up.",
    )
    log_interval_s: float = Field(60.0, gt=0, description="Seconds between two log lines "
                                  "about blocked attempts to the same destination.")

    @field_validator("allow")
    @classmethod
    def _valid_rules(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_rule(entry)
        return value


def _normal_name(name: str) -> str:
    return name.lower().rstrip(".")


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def is_local_address(address: IPAddress) -> bool:
    """Return whether an address is loopback, an IPv4-mapped loopback one included."""
    if address.is_loopback:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped is not None and bool(mapped.is_loopback)


def is_local_name(name: str) -> bool:
    """Return whether a host name means this host (``localhost`` and ``*.localhost``)."""
    normal = _normal_name(name)
    return normal in LOCAL_NAMES or normal.endswith(".localhost")


def is_local_destination(host: str) -> bool:
    """Return whether a host (address or name) is this host, which is always allowed."""
    address = _ip(host)
    return is_local_name(host) if address is None else is_local_address(address)


@dataclass(frozen=True)
class EgressPolicy:
    """The destinations this process may reach besides loopback, which is always allowed."""

    rules: tuple[AllowRule, ...] = ()
    # Addresses of the host-name rules, resolved at start-up.
    resolved: Mapping[str, frozenset[IPAddress]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: EgressSettings) -> EgressPolicy:
        return cls(tuple(parse_rule(entry) for entry in settings.allow))

    def allows_address(self, host: str, port: int | None) -> bool:
        """Return whether a connection to ``host`` (an IP address or a name) may be made."""
        address = _ip(host)
        if address is None:
            return is_local_name(host) or any(
                rule.host == _normal_name(host) and rule.allows_port(port) for rule in self.rules)
        if is_local_address(address):
            return True
        for rule in self.rules:
            if not rule.allows_port(port):
                continue
            if rule.network is not None and address in rule.network:
                return True
            if rule.host is not None and address in self.resolved.get(rule.host, ()):
                return True
        return False

    def allows_lookup(self, host: str | None) -> bool:
        """Return whether a name may be looked up; an address literal needs no DNS query."""
        if not host or _ip(host) is not None or is_local_name(host):
            return True
        return any(rule.host == _normal_name(host) for rule in self.rules)

    def resolve_hosts(self) -> EgressPolicy:
        """Return this policy with the addresses of its host-name rules looked up."""
        resolved: dict[str, frozenset[IPAddress]] = {}
        for rule in self.rules:
            if rule.host is None or rule.host in resolved:
                continue
            try:
                infos = socket.getaddrinfo(rule.host, rule.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                logger.warning("Cannot resolve egress.allow entry %s (%s); only connections "
                               "that name it directly are allowed", rule.text, exc)
                continue
            addresses = {_ip(str(info[4][0])) for info in infos}
            resolved[rule.host] = frozenset(item for item in addresses if item is not None)
        return EgressPolicy(self.rules, resolved)


class _BlockLog:
    """Logs blocked attempts, at most once per interval per destination."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, int]] = {}

    def note(self, action: str, destination: str) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._entries.get(destination, (-self.interval_s, 0))
            if now - last < self.interval_s:
                self._entries[destination] = (last, suppressed + 1)
                return
            if len(self._entries) >= _MAX_LOGGED_DESTINATIONS:
                self._entries.clear()
            self._entries[destination] = (now, 0)
        repeats = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.warning(
            "Egress guard blocked %s %s from %s%s. Add it to egress.allow if this "
            "destination is intended.", action, destination, _caller(), repeats)


class _Guard:
    def __init__(self, policy: EgressPolicy, log_interval_s: float) -> None:
        self.policy = policy
        self.log = _BlockLog(log_interval_s)

    def check(self, event: str, args: tuple[Any, ...]) -> None:
        if event in _SEND_EVENTS:
            self._check_send(event, args[0], args[1])
        elif event in _LOOKUP_EVENTS:
            host = _text(args[0])
            if not self.policy.allows_lookup(host):
                self._block("name lookup of", str(host))
        elif event in _REVERSE_EVENTS:
            address = args[0][0] if isinstance(args[0], tuple) else args[0]
            host = _text(address)
            if host and not self.policy.allows_address(host, None):
                self._block("reverse lookup of", host)

    def _check_send(self, event: str, sock: socket.socket, address: Any) -> None:
        if address is None or sock.family in _LOCAL_FAMILIES:
            return
        action = "connection to" if event == "socket.connect" else "datagram to"
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            self._block(action, f"{sock.family!r} address {address!r}")
        host, port = _text(address[0]) or "", int(address[1])
        if not self.policy.allows_address(host, port):
            self._block(action, _host_port(host, port))

    def _block(self, action: str, destination: str) -> None:
        if not getattr(_reentry, "active", False):
            _reentry.active = True
            try:
                self.log.note(action, destination)
            finally:
                _reentry.active = False
        raise EgressBlockedError(
            f"Egress guard blocked {action} {destination}: only loopback and egress.allow "
            "may be reached. Add the destination to egress.allow if it is intended.")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("idna", errors="replace")
    return None if value is None else str(value)


def _host_port(host: str, port: int | None) -> str:
    bracketed = f"[{host}]" if ":" in host else host
    return bracketed if port is None else f"{bracketed}:{port}"


_SOCKET_MODULES = ("socket", "asyncio", "selectors", "ssl", "concurrent", "threading")
_HOOK_FUNCTIONS = frozenset({"_caller", "note", "_block", "_check_send", "check", "_audit_hook"})


def _caller() -> str:
    """Return the innermost code location outside the socket machinery, for the log line."""
    frame = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        in_hook = module == __name__ and frame.f_code.co_name in _HOOK_FUNCTIONS
        if not in_hook and not module.startswith(_SOCKET_MODULES):
            return f"{module}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "unknown code"


_reentry = threading.local()
_install_lock = threading.Lock()
_hook_added = False
_guard: _Guard | None = None


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    # Runs on every audit event of the process (imports, file opens, ...): return fast.
    if not event.startswith("socket."):
        return
    guard = _guard
    if guard is not None:
        guard.check(event, args)


def install(settings: EgressSettings) -> EgressPolicy | None:
    """Guard this process with ``settings``, or stop guarding it if they disable the guard.

    Safe to call again: the audit hook is added once and its policy replaced. Return the
    policy in force, None when disabled.
    """
    global _guard, _hook_added
    with _install_lock:
        if not settings.enabled:
            # A warning when this turns a running guard off; the server logs at INFO anyway.
            level = logging.WARNING if _guard is not None else logging.INFO
            logger.log(level, "Egress guard off (egress.enabled = false): this process may "
                       "connect anywhere the network allows")
            _guard = None
            return None
        policy = EgressPolicy.from_settings(settings)
        # The new policy is in force while its host names are resolved, so only they are.
        _guard = _Guard(policy, settings.log_interval_s)
        if not _hook_added:
            sys.addaudithook(_audit_hook)
            _hook_added = True
    resolved = policy.resolve_hosts()
    _guard.policy = resolved
    logger.info("Egress guard on; allowed beyond loopback: %s",
                ", ".join(rule.text for rule in policy.rules) or "nothing")
    return resolved


def install_from_environment() -> EgressPolicy | None:
    """Guard a CLI command with the settings of $ENCLAVE_CONFIG or ./enclave.toml and env.

    Invalid settings fall back to the defaults (guard on, loopback only); the command that
    reads the settings reports the error itself.
    """
    # Imported here because enclave.config imports this module for EgressSettings.
    from enclave.config import load_settings

    try:
        settings = load_settings(None).egress
    except ConfigError:
        settings = EgressSettings()
    return install(settings)


def active_policy() -> EgressPolicy | None:
    """Return the policy in force, None when the guard is off."""
    guard = _guard
    return None if guard is None else guard.policy


ProbeOutcome = Literal["blocked", "connected", "failed"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    host: str
    port: int
    outcome: ProbeOutcome
    detail: str
    guard_enabled: bool


def probe(host: str, port: int, timeout_s: float = 3.0) -> ProbeResult:
    """Try a TCP connection to an operator-named destination, as this process's code would.

    Blocking; the server runs it in a worker thread. ``blocked`` means the guard refused it
    before any packet was sent.
    """
    enabled = _guard is not None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except EgressBlockedError as exc:
        return ProbeResult(host, port, "blocked", str(exc), enabled)
    except OSError as exc:
        detail = exc.strerror or str(exc) or type(exc).__name__
        return ProbeResult(host, port, "failed", detail, enabled)
    return ProbeResult(host, port, "connected", "TCP connection established and closed",
                       enabled)


def configured_destinations(values: Mapping[str, Any], path: str = "") -> Iterator[
        tuple[str, str, int]]:
    """Yield (setting, host, port) for every ``*_url`` setting that names a network host."""
    for key, value in values.items():
        name = f"{path}.{key}" if path else key
        if isinstance(value, Mapping):
            yield from configured_destinations(value, name)
        elif isinstance(value, str) and key.endswith("url") and "://" in value:
            parts = urlsplit(value)
            if parts.hostname:
                port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
                yield name, parts.hostname, port


def check_configured_destinations(settings: Any) -> None:
    """Raise ConfigError if a URL setting names a host the guard would block.

    PostgreSQL connections go through libpq, which the guard cannot see, so this check keeps
    the allow-list a complete list of the destinations Enclave reaches.
    """
    policy = active_policy()
    if policy is None:
        return
    unlisted = [
        f"{name} -> {_host_port(host, port or None)}"
        for name, host, port in configured_destinations(settings.model_dump())
        if not policy.allows_address(host, port or None)
    ]
    if unlisted:
        raise ConfigError(_(
            "These settings name hosts that egress.allow does not list: {destinations}. Add "
            "each HOST:PORT to egress.allow, or point the setting at loopback.",
            destinations="; ".join(unlisted)))
