"""``enclave doctor``: check that a deployment keeps its data in and its users known."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from enclave.cli.table import format_table
from enclave.config import load_settings
from enclave.i18n import _, ngettext
from enclave.ops import egress
from enclave.ops.doctor import DoctorOptions, run_checks

API_KEY_VARIABLE = "ENCLAVE_API_KEY"

HELP = _("Check the address, API keys, egress guard, permissions, model checksums and "
         "privacy.\n\nExits with status 1 if any check fails.")


def _parse_probe(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise typer.BadParameter(
            _("{value!r} is not HOST:PORT; write e.g. 192.0.2.1:443 or [2001:db8::1]:443",
              value=text), param_hint="--probe")
    return host, int(port)


def doctor(
    probe: Annotated[list[str] | None, typer.Option(
        "--probe", metavar="HOST:PORT",
        help=_("Destination to try to reach, from this process and (with an admin key in "
               "$ENCLAVE_API_KEY) from the running server; repeat for several. Default: none."),
    )] = None,
    server: Annotated[str | None, typer.Option(
        metavar="URL", help=_("Running server to ask for its view of --probe destinations. "
                              "Default: the address in the settings (server.host and "
                              "server.port)."))] = None,
    manifest: Annotated[Path | None, typer.Option(
        metavar="PATH", help=_("sha256sum file with the expected model checksums. Default: "
                               "SHA256SUMS next to each model file."))] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help=_("Print JSON lines instead of a table."))] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="PATH",
        help=_("Settings file (TOML). Default: $ENCLAVE_CONFIG or ./enclave.toml."),
    )] = None,
) -> None:
    """Check the address, API keys, egress guard, permissions, model checksums and privacy.

    Exits with status 1 if any check fails.
    """
    if server and not probe:
        raise typer.BadParameter(_("--server only matters with --probe HOST:PORT, which names "
                                   "the destination the server should try to reach."),
                                 param_hint="--server")
    probes = tuple(_parse_probe(text) for text in probe or [])
    settings = load_settings(config)
    egress.install(settings.egress)
    options = DoctorOptions(probes=probes, server_url=server.rstrip("/") if server else None,
                            admin_key=os.environ.get(API_KEY_VARIABLE), manifest=manifest)
    results = run_checks(settings, options)

    if as_json:
        for result in results:
            typer.echo(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
    else:
        labels = {"pass": _("PASS"), "warn": _("WARN"), "fail": _("FAIL")}
        # A detail quoting a driver error (libpq's spans two lines) stays on its table row.
        rows = [[result.check, labels[result.status],
                 " ".join(line.strip() for line in result.detail.splitlines())]
                for result in results]
        typer.echo(format_table([_("CHECK"), _("STATUS"), _("DETAIL")], rows))
        counts = {status: sum(1 for result in results if result.status == status)
                  for status in ("pass", "warn", "fail")}
        typer.echo(ngettext("{passed} passed, {warned} warning, {failed} failed",
                            "{passed} passed, {warned} warnings, {failed} failed",
                            counts["warn"], passed=counts["pass"], warned=counts["warn"],
                            failed=counts["fail"]))
    if any(result.status == "fail" for result in results):
        raise typer.Exit(1)
