"""``enclave redact``: redact personal data in a JSONL file, or count it.

Every string value of every record is scanned, or only the values under the keys named with
``--field`` (at any depth, so ``--field content`` covers chat-format ``messages[].content``).
Each line gets its own placeholder map, so a value repeated within a record keeps one
placeholder. Kinds, custom terms and custom patterns come from the ``[privacy]`` settings.

Output is written to a temporary file first and renamed (or copied to standard output) only
after the last line was processed, so an invalid line leaves nothing partial behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, BinaryIO

import typer

from enclave.cli.table import format_table
from enclave.config import load_settings
from enclave.errors import EnclaveError
from enclave.i18n import _
from enclave.policy.redactor import PlaceholderMap, Redactor

HELP = _("Redact personal data in a JSONL file and print the findings per kind.")


class RedactMode(StrEnum):
    REDACT = "redact"
    DETECT = "detect"


class InputFileError(EnclaveError):
    """The input file is missing, unreadable, or has a line that is not valid JSON."""


@dataclass
class RedactStats:
    """Totals over one input file."""

    records: int = 0
    changed: int = 0
    counts: Counter[str] = field(default_factory=Counter)


def redact(
    file: Annotated[str, typer.Argument(
        metavar="FILE", help=_("JSONL file to read; - reads standard input."))],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="PATH",
        help=_("File to write the redacted JSONL to. Default: standard output."),
    )] = None,
    fields: Annotated[list[str] | None, typer.Option(
        "--field", metavar="KEY",
        help=_("Redact only string values under this key, at any depth; repeat for several "
               "keys. Default: every string value."),
    )] = None,
    mode: Annotated[RedactMode, typer.Option(
        help=_("redact writes the redacted records; detect only counts findings per kind."),
    )] = RedactMode.REDACT,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="PATH",
        help=_("Settings file (TOML) whose privacy section sets the kinds and custom terms. "
               "Default: $ENCLAVE_CONFIG or ./enclave.toml."),
    )] = None,
) -> None:
    """Redact personal data in a JSONL file and print the findings per kind."""
    if mode is RedactMode.DETECT and output is not None:
        raise typer.BadParameter(_("--output has no effect with --mode detect; remove it."))
    redactor = Redactor(load_settings(config).privacy)
    selected = frozenset(fields) if fields else None

    name = _("standard input") if file == "-" else file
    with _open_input(file) as source:
        if mode is RedactMode.DETECT:
            stats = process_lines(source, name, redactor, selected, sink=None)
        else:
            stats = _write_atomically(output, lambda sink: process_lines(
                source, name, redactor, selected, sink))

    # The table goes to standard error when standard output carries the records.
    print_counts(stats, err=mode is RedactMode.REDACT and output is None)


def process_lines(
    source: BinaryIO, name: str, redactor: Redactor, fields: frozenset[str] | None,
    sink: IO[str] | None,
) -> RedactStats:
    """Redact (or, without a sink, only scan) each JSONL line of ``source``."""
    stats = RedactStats()
    for number, raw in enumerate(source, start=1):
        line = _decode(raw, number, name)
        if not line.strip():
            if sink is not None:
                sink.write("\n")
            continue

        record = _parse(line, number, name)
        counts: Counter[str] = Counter()
        redacted = redact_record(record, redactor, fields, counts)
        stats.records += 1
        stats.changed += 1 if counts else 0
        stats.counts.update(counts)
        if sink is not None:
            sink.write(json.dumps(redacted, ensure_ascii=False) + "\n")
    return stats


def redact_record(
    record: Any, redactor: Redactor, fields: frozenset[str] | None, counts: Counter[str]
) -> Any:
    """Return ``record`` with the selected strings redacted; add findings to ``counts``."""
    placeholders = PlaceholderMap()

    def redact_text(text: str) -> str:
        redaction = redactor.redact(text, placeholders)
        counts.update(redaction.counts)
        return redaction.text

    return _walk(record, redact_text, fields, selected=fields is None)


def _walk(value: Any, redact_text: Callable[[str], str], fields: frozenset[str] | None,
          selected: bool) -> Any:
    if isinstance(value, str):
        return redact_text(value) if selected else value
    if isinstance(value, list):
        return [_walk(item, redact_text, fields, selected) for item in value]
    if isinstance(value, dict):
        return {
            key: _walk(item, redact_text, fields,
                       selected or (fields is not None and key in fields))
            for key, item in value.items()
        }
    return value


def _decode(raw: bytes, number: int, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(_(
            "Line {line} of {file} is not valid UTF-8. Convert the file to UTF-8; nothing was "
            "written.", line=number, file=name,
        )) from None


def _parse(line: str, number: int, name: str) -> Any:
    # With its line break, a line cut short fails at column 1 of an empty second line. Without
    # it, the error names the column after the last character.
    try:
        return json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        raise InputFileError(_(
            "Line {line} of {file} is not valid JSON ({error} at column {column}). Fix or "
            "remove that line; nothing was written.",
            line=number, file=name, error=_json_error(exc.msg), column=exc.colno,
        )) from None


def _json_error(message: str) -> str:
    """Translate the ``msg`` of a ``json.JSONDecodeError`` as CPython 3.11 to 3.13 word it.

    A message this table does not know is returned in English.
    """
    known = {
        "Expecting value": _("Expecting value"),
        "Expecting property name enclosed in double quotes":
            _("Expecting property name enclosed in double quotes"),
        "Expecting ':' delimiter": _("Expecting ':' delimiter"),
        "Expecting ',' delimiter": _("Expecting ',' delimiter"),
        "Unterminated string starting at": _("Unterminated string starting at"),
        "Invalid control character at": _("Invalid control character at"),
        "Invalid \\escape": _("Invalid \\escape"),
        "Invalid \\uXXXX escape": _("Invalid \\uXXXX escape"),
        "Extra data": _("Extra data"),
        "Illegal trailing comma before end of object":
            _("Illegal trailing comma before end of object"),
        "Illegal trailing comma before end of array":
            _("Illegal trailing comma before end of array"),
    }
    return known.get(message, message)


@contextmanager
def _open_input(file: str) -> Iterator[BinaryIO]:
    if file == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(file, "rb")  # noqa: SIM115 (closed below, after the caller is done)
    except FileNotFoundError:
        raise InputFileError(_("File {file} not found. Check the path.", file=file)) from None
    except OSError as exc:
        raise InputFileError(_("Cannot read {file}: {error}.", file=file,
                               error=exc.strerror)) from None
    with handle:
        yield handle


def _write_atomically(output: Path | None, produce: Callable[[IO[str]], RedactStats]) -> (
        RedactStats):
    """Run ``produce`` on a temporary file, then rename it to ``output`` or copy it to stdout.

    The temporary file is created with mode 0600, which the renamed output keeps, because
    it may still hold data that no pattern recognised.
    """
    if output is None:
        with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
            stats = produce(spool)
            spool.seek(0)
            shutil.copyfileobj(spool, sys.stdout)
            sys.stdout.flush()
        return stats

    directory = output.resolve().parent
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (renamed or removed below)
        "w", encoding="utf-8", dir=directory, prefix=f".{output.name}.", suffix=".tmp",
        delete=False,
    )
    try:
        with handle:
            stats = produce(handle)
        os.replace(handle.name, output)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return stats


def print_counts(stats: RedactStats, err: bool) -> None:
    """Print the findings per kind as a table, then the record totals."""
    rows = [[kind, str(count)] for kind, count in sorted(stats.counts.items())]
    rows.append([_("Total"), str(sum(stats.counts.values()))])
    lines = format_table([_("Kind"), _("Count")], rows, "lr").splitlines()
    lines.append(_("{records} records read, {changed} with personal data.",
                   records=stats.records, changed=stats.changed))
    for line in lines:
        typer.echo(line, err=err)
