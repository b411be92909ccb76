"""Egress guard: allow-list parsing, decisions, and the audit hook in a separate process.

The hook is installed in a child process only: an audit hook cannot be removed, and the
test process must stay unguarded for the other tests. 192.0.2.1 (TEST-NET-1, RFC 5737) is
never reachable; the guard must refuse it before any packet is sent.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

from enclave.errors import EnclaveError
from enclave.ops import egress
from enclave.ops.egress import EgressPolicy, EgressSettings, parse_rule

BLOCKED_HOST = "192.0.2.1"


@pytest.mark.parametrize(("text", "network", "host", "port"), [
    ("10.0.0.5", "10.0.0.5/32", None, None),
    ("10.0.0.5:5432", "10.0.0.5/32", None, 5432),
    ("10.1.0.0/16", "10.1.0.0/16", None, None),
    ("10.1.0.0/16:6379", "10.1.0.0/16", None, 6379),
    ("fd00::5", "fd00::5/128", None, None),
    ("[fd00::5]:5432", "fd00::5/128", None, 5432),
    ("fd00::/8", "fd00::/8", None, None),
    ("DB.Internal", None, "db.internal", None),
    ("db.internal.:5432", None, "db.internal", 5432),
])
def test_parse_rule_forms(text: str, network: str | None, host: str | None,
                          port: int | None) -> None:
    rule = parse_rule(text)
    assert rule.network == (ipaddress.ip_network(network) if network else None)
    assert rule.host == host
    assert rule.port == port


@pytest.mark.parametrize("text", ["", "db:0", "db:70000", "db:http", "[fd00::5", "a b",
                                  "[fd00::5]5432"])
def test_parse_rule_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="allow entry|port"):
        parse_rule(text)


def test_settings_reject_invalid_allow_entry() -> None:
    with pytest.raises(ValidationError, match="70000"):
        EgressSettings(allow=["db:70000"])


def test_policy_decisions() -> None:
    policy = EgressPolicy.from_settings(EgressSettings(
        allow=["10.0.0.5:5432", "10.1.0.0/16", "db.internal:5432"]))
    allowed = [("127.0.0.1", 80), ("127.8.9.10", 1), ("::1", 80), ("::ffff:127.0.0.1", 80),
               ("localhost", 80), ("api.localhost", 80), ("10.0.0.5", 5432),
               ("10.1.200.3", 1), ("db.internal", 5432), ("DB.INTERNAL.", 5432)]
    blocked = [(BLOCKED_HOST, 80), ("10.0.0.5", 22), ("10.2.0.1", 80), ("0.0.0.0", 80),
               ("db.internal", 22), ("example.com", 443), ("169.254.169.254", 80),
               ("fe80::1%eth0", 80)]
    for host, port in allowed:
        assert policy.allows_address(host, port), (host, port)
    for host, port in blocked:
        assert not policy.allows_address(host, port), (host, port)

    assert policy.allows_lookup("db.internal")
    assert policy.allows_lookup(BLOCKED_HOST)  # an address literal needs no DNS query
    assert policy.allows_lookup(None)
    assert not policy.allows_lookup("example.com")


def test_host_rule_allows_its_resolved_addresses() -> None:
    policy = EgressPolicy((parse_rule("db.internal:5432"),),
                          {"db.internal": frozenset({ipaddress.ip_address("10.9.9.9")})})
    assert policy.allows_address("10.9.9.9", 5432)
    assert not policy.allows_address("10.9.9.9", 80)


def test_configured_destinations_found_in_settings() -> None:
    settings = {"access": {"store_url": "postgresql://enclave@db.internal/keys",
                           "rate_limit_url": "redis://10.0.0.7:6380/2"},
                "audit": {"store_url": "sqlite:////var/lib/enclave/audit.db"},
                "server": {"host": "127.0.0.1"}}
    assert sorted(egress.configured_destinations(settings)) == [
        ("access.rate_limit_url", "10.0.0.7", 6380),
        ("access.store_url", "db.internal", 5432),
    ]


GUARDED_SCRIPT = textwrap.dedent("""
    import asyncio, json, logging, socket, sys, time
    from enclave.ops import egress

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    egress.install(egress.EgressSettings(allow=json.loads(sys.argv[1])))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    results = {}

    def attempt(name, action):
        started = time.perf_counter()
        try:
            action()
            outcome = "allowed"
        except egress.EgressBlockedError:
            outcome = "blocked"
        except OSError as exc:
            outcome = f"oserror {exc.errno}"
        results[name] = [outcome, time.perf_counter() - started]

    def tcp_connect():
        with socket.socket() as sock:
            sock.settimeout(5)
            sock.connect(("192.0.2.1", 80))

    def udp_send():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", ("192.0.2.1", 53))

    async def open_connection():
        await asyncio.wait_for(asyncio.open_connection("192.0.2.1", 443), 5)

    attempt("tcp_connect", tcp_connect)
    attempt("udp_sendto", udp_send)
    attempt("asyncio", lambda: asyncio.run(open_connection()))
    attempt("create_connection", lambda: socket.create_connection(("192.0.2.1", 80), 5))
    attempt("lookup", lambda: socket.getaddrinfo("example.com", 443))
    attempt("gethostbyname", lambda: socket.gethostbyname("example.com"))
    attempt("reverse_lookup", lambda: socket.gethostbyaddr("192.0.2.1"))
    attempt("loopback", lambda: socket.create_connection(("127.0.0.1", port), 5).close())
    attempt("localhost", lambda: socket.create_connection(("localhost", port), 5).close())
    for _ in range(3):
        attempt("repeat", tcp_connect)
    results["probe"] = egress.probe("192.0.2.1", 80).outcome
    print(json.dumps(results))
""")


def run_guarded(allow: list[str] | None = None) -> tuple[dict[str, Any], str]:
    completed = subprocess.run(
        [sys.executable, "-c", GUARDED_SCRIPT, json.dumps(allow or [])],
        capture_output=True, text=True, timeout=60, check=True)
    return json.loads(completed.stdout), completed.stderr


@pytest.fixture(scope="module")
def guarded() -> tuple[dict[str, Any], str]:
    return run_guarded()


@pytest.mark.parametrize("attempt", ["tcp_connect", "udp_sendto", "asyncio",
                                     "create_connection", "lookup", "gethostbyname",
                                     "reverse_lookup", "repeat"])
def test_guard_blocks_before_sending(guarded: tuple[dict[str, Any], str], attempt: str) -> None:
    results, _ = guarded
    outcome, seconds = results[attempt]
    assert outcome == "blocked"
    # Refused before the system call: no connect timeout, no DNS round trip.
    assert seconds < 0.05


def test_guard_allows_loopback(guarded: tuple[dict[str, Any], str]) -> None:
    results, _ = guarded
    assert results["loopback"][0] == "allowed"
    assert results["localhost"][0] == "allowed"
    assert results["probe"] == "blocked"


def test_guard_logs_repeats_once_per_interval(guarded: tuple[dict[str, Any], str]) -> None:
    _, log = guarded
    lines = [line for line in log.splitlines() if "192.0.2.1:80" in line]
    # tcp_connect, create_connection, three repeats and the probe: one line.
    assert len(lines) == 1, log
    assert "egress.allow" in lines[0]
    assert "__main__" in lines[0]  # names the code that tried


def test_guard_disabled_lets_lookups_through() -> None:
    script = textwrap.dedent("""
        import socket
        from enclave.ops import egress
        egress.install(egress.EgressSettings())
        egress.install(egress.EgressSettings(enabled=False))
        try:
            socket.getaddrinfo("host.invalid", 80)
        except egress.EgressBlockedError:
            print("blocked")
        except OSError:
            print("not blocked")
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=60, check=True)
    assert completed.stdout.strip() == "not blocked"


def test_unlisted_configured_host_is_a_config_error() -> None:
    script = textwrap.dedent("""
        from enclave.config import Settings
        from enclave.errors import ConfigError
        from enclave.ops import egress
        settings = Settings(access={"rate_limit_url": "redis://10.0.0.7:6379/0"})
        egress.check_configured_destinations(settings)  # no guard yet: nothing to compare
        egress.install(settings.egress)
        try:
            egress.check_configured_destinations(settings)
        except ConfigError as exc:
            print(exc)
        settings.egress.allow = ["10.0.0.7:6379"]
        egress.install(settings.egress)
        egress.check_configured_destinations(settings)
        print("allowed")
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=60, check=True)
    first, second = completed.stdout.strip().splitlines()
    assert "access.rate_limit_url -> 10.0.0.7:6379" in first
    assert second == "allowed"


def test_blocked_error_is_os_and_enclave_error() -> None:
    # Libraries treat an OSError as a failed connection; the CLI prints an EnclaveError.
    assert issubclass(egress.EgressBlockedError, PermissionError)
    assert issubclass(egress.EgressBlockedError, EnclaveError)
