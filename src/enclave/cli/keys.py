"""``enclave keys``: create, list, revoke and rotate API keys.

A new key is printed once, alone on standard output, so ``KEY=$(enclave keys create ...)``
captures it; everything else goes to standard error. The store keeps only a salted hash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.access import manage
from enclave.access.keys import KeyRecord, Role, display_prefix
from enclave.access.store import KeyStore, open_key_store
from enclave.cli.table import format_table
from enclave.config import Settings, load_settings
from enclave.i18n import _

app = typer.Typer(help=_("Create, list, revoke and rotate API keys."), no_args_is_help=True)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", metavar="PATH",
    help=_("Settings file (TOML). Default: $ENCLAVE_CONFIG or ./enclave.toml."),
)]
PrefixArgument = Annotated[str, typer.Argument(
    metavar="PREFIX",
    help=_("The key's prefix, e.g. sk-enc-3f9a1c0b7e21 (as `keys list` shows)."),
)]


@contextmanager
def _store(config: Path | None) -> Iterator[tuple[Settings, KeyStore]]:
    settings = load_settings(config)
    store = open_key_store(settings.access, settings.data_dir)
    try:
        yield settings, store
    finally:
        store.close()


def _describe(record: KeyRecord) -> str:
    return _("{prefix} for user {user} (role {role}, models {models})",
             prefix=display_prefix(record.prefix), user=record.user_id, role=record.role,
             models=", ".join(record.models))


def _status_label(status: str) -> str:
    labels = {"active": _("active"), "revoked": _("revoked"), "expired": _("expired")}
    return labels.get(status, status)


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


@app.command("create", help=_("Create a key and print it once; the store keeps only its hash."))
def create(
    user: Annotated[str, typer.Option(
        "--user", "-u", help=_("User id the key belongs to."))],
    name: Annotated[str, typer.Option(
        help=_("Display name, e.g. the person or service."))] = "",
    role: Annotated[str, typer.Option(help=_("user, or admin for the admin API."))] = "user",
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help=_("Model id or glob the key may use; repeat for several. "
                                "Default: * (every model)."))] = None,
    rpm: Annotated[int | None, typer.Option(
        "--rpm", help=_("Requests per minute (default: no limit)."))] = None,
    tpm: Annotated[int | None, typer.Option(
        "--tpm", help=_("Prompt and completion tokens per minute (default: no limit)."))]
    = None,
    expires_in_days: Annotated[float | None, typer.Option(
        "--expires-in-days", help=_("Days until the key expires (default: never)."))] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once; the store keeps only its hash."""
    now = time.time()
    if role not in ("user", "admin"):
        raise typer.BadParameter(_("use user or admin"), param_hint="--role")
    if expires_in_days is not None and expires_in_days <= 0:
        raise typer.BadParameter(_("use a number of days above 0"),
                                 param_hint="--expires-in-days")
    key_role: Role = "admin" if role == "admin" else "user"
    spec = manage.KeySpec(
        user_id=user, name=name, role=key_role, models=tuple(model or ["*"]),
        requests_per_minute=rpm, tokens_per_minute=tpm,
        expires_at=None if expires_in_days is None else now + expires_in_days * 86_400,
    )
    with _store(config) as (settings, store):
        issued = manage.create_key(store, spec, now)
    typer.echo(_("Created key {key}.", key=_describe(issued.record)), err=True)
    typer.echo(_("This is the only time the key is shown; store it now:"), err=True)
    typer.echo(issued.key)


@app.command("list", help=_("List every key (never its secret), revoked and expired ones "
                            "included."))
def list_keys(
    as_json: Annotated[bool, typer.Option(
        "--json", help=_("Print JSON lines instead of a table."))] = False,
    config: ConfigOption = None,
) -> None:
    """List every key (never its secret), revoked and expired ones included."""
    with _store(config) as (settings, store):
        records = store.records()
    now = time.time()
    if as_json:
        for record in records:
            typer.echo(json.dumps(manage.key_view(record, now), ensure_ascii=False))
        return
    if not records:
        typer.echo(_("No keys yet. Create one with `enclave keys create --user NAME`."),
                   err=True)
        return
    headers = [_("PREFIX"), _("USER"), _("NAME"), _("ROLE"), _("MODELS"), _("RPM"), _("TPM"),
               _("CREATED"), _("EXPIRES"), _("STATUS")]
    rows: list[list[str]] = [
        [display_prefix(record.prefix), record.user_id, record.name or "-", record.role,
         ",".join(record.models), _limit(record.requests_per_minute),
         _limit(record.tokens_per_minute), manage.iso_time(record.created_at) or "-",
         manage.iso_time(record.expires_at) or "-", _status_label(record.status(now))]
        for record in records
    ]
    typer.echo(format_table(headers, rows))


@app.command("revoke", help=_("Revoke a key; servers reject it within access.cache_ttl_s "
                              "seconds."))
def revoke(prefix: PrefixArgument, config: ConfigOption = None) -> None:
    """Revoke a key; servers reject it within access.cache_ttl_s seconds."""
    with _store(config) as (settings, store):
        record = manage.revoke_key(store, prefix)
    typer.echo(_("Revoked key {key}. Running servers reject it within {seconds:g} s.",
                 key=_describe(record), seconds=settings.access.cache_ttl_s), err=True)


@app.command("rotate", help=_("Replace a key with a new one that has the same user, models "
                              "and limits."))
def rotate(
    prefix: PrefixArgument,
    grace_minutes: Annotated[float, typer.Option(
        "--grace-minutes", help=_("Minutes the old key keeps working (default 0: revoked "
                                  "at once)."))] = 0.0,
    config: ConfigOption = None,
) -> None:
    """Replace a key with a new one that has the same user, models and limits."""
    if grace_minutes < 0:
        raise typer.BadParameter(_("use 0 or more minutes"), param_hint="--grace-minutes")
    with _store(config) as (settings, store):
        issued, old = manage.rotate_key(store, prefix, grace_minutes * 60)
    details: dict[str, Any] = {"old": display_prefix(old.prefix), "key": _describe(issued.record)}
    if grace_minutes:
        typer.echo(_("Created key {key}; {old} stops working at {time}.",
                     time=manage.iso_time(old.expires_at), **details), err=True)
    else:
        typer.echo(_("Created key {key}; {old} is revoked.", **details), err=True)
    typer.echo(_("This is the only time the key is shown; store it now:"), err=True)
    typer.echo(issued.key)
