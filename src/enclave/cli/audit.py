"""``enclave audit``: verify, search, export and purge the audit trail, and print the ROPA."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.audit.chain import Head
from enclave.audit.errors import AuditError
from enclave.audit.export import ExportFile, write_csv, write_jsonl
from enclave.audit.location import (
    create_store,
    open_existing_store,
    signing_key_path,
    store_url,
)
from enclave.audit.records import format_time, now_us, parse_time
from enclave.audit.retention import plan_purge, purge_expired
from enclave.audit.ropa import build_ropa, render_markdown
from enclave.audit.signing import (
    CheckpointSigner,
    load_or_create_signing_key,
    load_public_key,
    load_signing_key,
    trusted_keys,
)
from enclave.audit.store import AuditStore, SearchFilter, StoreOptions
from enclave.audit.verify import (
    RANGE_NOTE,
    VerifyReport,
    latest_valid_checkpoint,
    verify_chain,
)
from enclave.cli.table import format_table
from enclave.config import Settings, load_settings
from enclave.i18n import _

app = typer.Typer(
    help=_("Verify, search, export and purge the tamper-evident audit trail."),
    no_args_is_help=True,
)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", metavar="PATH",
    help=_("Settings file (TOML). Default: $ENCLAVE_CONFIG or ./enclave.toml."),
)]
SinceOption = Annotated[str | None, typer.Option(
    metavar="TIME", help=_("Only records at or after this ISO 8601 time (UTC if no offset)."))]
UntilOption = Annotated[str | None, typer.Option(
    metavar="TIME", help=_("Only records before this ISO 8601 time (UTC if no offset)."))]


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class SearchFormat(StrEnum):
    TABLE = "table"
    JSONL = "jsonl"


def _time_option(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise typer.BadParameter(
            _("{value!r} is not an ISO 8601 date or time; use e.g. 2025-01-31 or "
              "2025-01-31T12:00:00Z.", value=value), param_hint=option) from None


# An HTTP status, an error code such as queue_full, or "interrupted".
_STATUS_FILTER = re.compile(r"[1-5][0-9]{2}|[a-z][a-z0-9_]*")


def _status_option(value: str | None) -> str | None:
    if value is not None and not _STATUS_FILTER.fullmatch(value):
        raise typer.BadParameter(
            _("{value!r} is neither an HTTP status (200), an error code (queue_full) nor "
              "'interrupted'.", value=value), param_hint="--status")
    return value


@contextmanager
def _reading(settings: Settings) -> Iterator[AuditStore]:
    """Open the configured store for reading; turn driver errors into AuditError."""
    store = open_existing_store(store_url(settings.audit, settings.data_dir))
    try:
        yield store
    except store.driver_errors as exc:
        raise AuditError(_("Reading the audit store {store} failed: {error}",
                           store=store.description, error=str(exc))) from None
    finally:
        store.close()


def _local_signer(settings: Settings) -> CheckpointSigner:
    return CheckpointSigner(load_signing_key(signing_key_path(settings.audit, settings.data_dir)))


def _trusted(
    settings: Settings, public_keys: list[Path] | None, use_local: bool
) -> dict[str, Ed25519PublicKey]:
    keys = [load_public_key(path) for path in public_keys or []]
    local_path = signing_key_path(settings.audit, settings.data_dir)
    if use_local and local_path.exists():
        keys.append(load_signing_key(local_path).public_key())
    if not keys:
        raise AuditError(_("No public key to check checkpoint signatures with. Pass one with "
                           "--public-key (from `enclave audit export-key`)."))
    return trusted_keys(keys)


@app.command("init", help=_("Create the audit store and the checkpoint signing key (mode 0600) "
                            "if missing."))
def init(config: ConfigOption = None) -> None:
    """Create the audit store and the checkpoint signing key (mode 0600) if missing."""
    settings = load_settings(config)
    key_path = signing_key_path(settings.audit, settings.data_dir)
    signer = CheckpointSigner(load_or_create_signing_key(key_path))
    store = create_store(store_url(settings.audit, settings.data_dir), StoreOptions(signer=signer))
    try:
        applied = store.migrate()
    finally:
        store.close()
    typer.echo(_("Audit store: {store} ({count} migrations applied)",
                 store=store.description, count=len(applied)))
    typer.echo(_("Signing key: {path} (key id {key_id})", path=key_path, key_id=signer.key_id))


@app.command("export-key", help=_("Print the public key (PEM) that verifies the checkpoint "
                                  "signatures."))
def export_key(config: ConfigOption = None) -> None:
    """Print the public key (PEM) that verifies the checkpoint signatures."""
    typer.echo(_local_signer(load_settings(config)).public_key_pem(), nl=False)


def _start_label(label: str) -> str:
    labels = {"genesis": _("genesis"), "purge anchor": _("purge anchor"),
              "checkpoint": _("last valid checkpoint"), "export start": _("export start")}
    return labels.get(label, label)


def _print_report(report: VerifyReport) -> None:
    if report.ok:
        typer.echo(_("Chain intact: {records} records up to seq {last} verified from the "
                     "{start} (seq {start_seq}), {checkpoints} signed checkpoints checked.",
                     records=report.records_checked, last=report.last_seq,
                     start=_start_label(report.start), start_seq=report.start_seq,
                     checkpoints=report.checkpoints_checked))
        return
    typer.echo(_("Chain broken. Problems found: {count}, in {records} records verified from "
                 "the {start} (seq {start_seq}).", count=len(report.breaks),
                 records=report.records_checked, start=_start_label(report.start),
                 start_seq=report.start_seq))
    for item in report.breaks:
        detail = _(item.template, **item.values)
        if item.merged:
            detail += " " + _(RANGE_NOTE)
        typer.echo(f"  {item.span()}  {item.kind}: {detail}")


def _report_json(report: VerifyReport) -> str:
    return json.dumps({
        "ok": report.ok, "start": report.start, "start_seq": report.start_seq,
        "records_checked": report.records_checked, "last_seq": report.last_seq,
        "checkpoints_checked": report.checkpoints_checked,
        "breaks": [{"kind": str(item.kind), "first_seq": item.first_seq,
                    "last_seq": item.last_seq, "detail": item.detail}
                   for item in report.breaks],
    }, indent=2)


@app.command("verify", help=_("Check the hash chain and the checkpoint signatures; exit "
                              "status 1 if broken."))
def verify(
    public_key: Annotated[list[Path] | None, typer.Option(
        "--public-key", metavar="PEM",
        help=_("Public key that signed checkpoints; repeat for several replicas. The local "
               "signing key is trusted too, except with --export."))] = None,
    export: Annotated[Path | None, typer.Option(
        "--export", metavar="FILE",
        help=_("Verify a JSONL export instead of the store, with --public-key only."))] = None,
    since_checkpoint: Annotated[bool, typer.Option(
        "--since-checkpoint",
        help=_("Start at the newest valid signed checkpoint instead of the genesis: faster, "
               "but trusts the records before it."))] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help=_("Print the report as JSON."))] = False,
    config: ConfigOption = None,
) -> None:
    """Check the hash chain and the checkpoint signatures; exit status 1 if broken."""
    settings = load_settings(config)
    retention = settings.audit.retention_months
    if export is not None:
        keys = _trusted(settings, public_key, use_local=False)
        source = ExportFile(export)
        report = verify_chain(source, keys, retention_months=retention, start=source.start,
                              start_label="export start")
    else:
        keys = _trusted(settings, public_key, use_local=True)
        with _reading(settings) as store, store.snapshot():
            start = latest_valid_checkpoint(store, keys) if since_checkpoint else None
            report = verify_chain(store, keys, retention_months=retention,
                                  start=Head(start.seq, start.hash) if start else None)
    if as_json:
        typer.echo(_report_json(report))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _request_summary(open_seq: int, open_text: str, close_seq: int | None,
                     close_text: str | None) -> dict[str, Any]:
    """Merge a request's open and close records into one flat dict."""
    opened = json.loads(open_text)
    closed = json.loads(close_text) if close_text else {}
    summary = {key: opened.get(key) for key in (
        "time", "request_id", "user_id", "key_prefix", "client", "route", "model",
        "privacy_profile", "query_excerpt", "query_sha256", "pii")}
    summary["open_seq"] = open_seq
    summary["close_seq"] = close_seq
    summary["outcome"] = closed.get("status", "interrupted")
    for key in ("error_code", "response_chars", "prompt_tokens", "completion_tokens",
                "latency_ms"):
        summary[key] = closed.get(key)
    summary["response_pii"] = closed.get("pii")
    return summary


def _print_table(rows: list[dict[str, Any]]) -> None:
    headers = [_("TIME"), _("REQUEST"), _("USER"), _("MODEL"), _("ROUTE"), _("STATUS"),
               _("TOKENS IN/OUT"), _("LATENCY MS")]
    lines = [[
        str(row["time"]), str(row["request_id"]), str(row["user_id"]), str(row["model"]),
        str(row["route"]),
        str(row["outcome"]) + (f" {row['error_code']}" if row["error_code"] else ""),
        f"{row['prompt_tokens'] or 0}/{row['completion_tokens'] or 0}",
        "" if row["latency_ms"] is None else f"{row['latency_ms']:.1f}",
    ] for row in rows]
    typer.echo(format_table(headers, lines))


@app.command("search", help=_("List requests, oldest first, with their outcome."))
def search(
    user: Annotated[str | None, typer.Option(help=_("Only requests of this user id."))] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    model: Annotated[str | None, typer.Option(help=_("Only requests for this model."))] = None,
    status: Annotated[str | None, typer.Option(
        help=_("Only requests with this HTTP status (200), error code (queue_full) or "
               "'interrupted' (no close record)."))] = None,
    limit: Annotated[int, typer.Option(min=1, help=_("Maximum requests to print."))] = 100,
    output_format: Annotated[SearchFormat, typer.Option(
        "--format", help=_("table for people, jsonl for tools."))] = SearchFormat.TABLE,
    config: ConfigOption = None,
) -> None:
    """List requests, oldest first, with their outcome."""
    query = SearchFilter(user_id=user, since_us=_time_option(since, "--since"),
                         until_us=_time_option(until, "--until"), model=model,
                         status=_status_option(status),
                         limit=limit)
    settings = load_settings(config)
    with _reading(settings) as store:
        found = store.search(query)
    rows = [_request_summary(item.open_seq, item.open_record, item.close_seq, item.close_record)
            for item in found]
    if output_format is SearchFormat.JSONL:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        typer.echo(_("No matching requests."))
        return
    _print_table(rows)


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise AuditError(_("Cannot write {path}: {reason}.", path=path,
                           reason=exc.strerror)) from None
    with handle:
        yield handle


@app.command("export", help=_("Export records for a regulator or a SIEM."))
def export(
    output_format: Annotated[ExportFormat, typer.Option(
        "--format", help=_("jsonl keeps the hashes and checkpoints, so the export can be "
                           "verified; csv has one flat line per record."))] = ExportFormat.JSONL,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="PATH",
        help=_("File to write. Default: standard output."))] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    config: ConfigOption = None,
) -> None:
    """Export records for a regulator or a SIEM."""
    since_us, until_us = _time_option(since, "--since"), _time_option(until, "--until")
    settings = load_settings(config)
    with _reading(settings) as store, store.snapshot(), _output(output) as out:
        if output_format is ExportFormat.JSONL:
            count = write_jsonl(store, out, since_us, until_us)
        else:
            count = write_csv(store, out, since_us, until_us)
    typer.echo(_("Exported {count} records.", count=count), err=True)


@app.command("purge", help=_("Remove the records older than audit.retention_months, whole "
                             "segments at a time."))
def purge(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help=_("Only print what would be removed."))] = False,
    yes: Annotated[bool, typer.Option("--yes", help=_("Do not ask for confirmation."))] = False,
    config: ConfigOption = None,
) -> None:
    """Remove the records older than audit.retention_months, whole segments at a time."""
    settings = load_settings(config)
    months = settings.audit.retention_months
    keys = trusted_keys([_local_signer(settings).public_key])
    with _reading(settings) as store:
        plan = plan_purge(store, keys, months, now_us())
        cutoff = format_time(plan.cutoff_us) if plan else None
        if plan is None:
            typer.echo(_("Nothing to purge: no signed checkpoint is older than the retention "
                         "of {months} months.", months=months))
            return
        typer.echo(_("{count} records up to seq {seq} (checkpoint of {time}) are older than "
                     "the retention of {months} months (before {cutoff}).",
                     count=plan.records, seq=plan.cut.seq, time=format_time(plan.cut.time_us),
                     months=months, cutoff=cutoff))
        if dry_run:
            return
        if not yes:
            typer.confirm(_("Remove them?"), abort=True)
        deleted = purge_expired(store, keys, plan)
    typer.echo(_("Removed {count} records; the chain now starts after seq {seq}.",
                 count=deleted, seq=plan.cut.seq))


@app.command("ropa", help=_("Print the record of processing activities (GDPR Art. 30) of the "
                            "audit trail."))
def ropa(
    as_json: Annotated[bool, typer.Option(
        "--json", help=_("Print JSON instead of markdown."))] = False,
    config: ConfigOption = None,
) -> None:
    """Print the record of processing activities (GDPR Art. 30) of the audit trail."""
    settings = load_settings(config)
    url = store_url(settings.audit, settings.data_dir)
    store_kind = "sqlite" if url.startswith("sqlite") else "postgresql"
    if as_json:
        typer.echo(json.dumps(build_ropa(settings.audit, store_kind), indent=2,
                              ensure_ascii=False))
        return
    typer.echo(render_markdown(build_ropa(settings.audit, store_kind, _), _))
