"""``enclave config``: show the effective settings, or the reference of every setting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enclave.config import load_settings
from enclave.i18n import _
from enclave.settings_reference import effective_toml, reference_markdown

app = typer.Typer(help=_("Inspect settings."), no_args_is_help=True)


@app.command("show", help=_(
    "Print the settings in force (file, environment and defaults) as TOML, secrets masked."))
def show(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c",
        help=_("Settings file (TOML). Default: $ENCLAVE_CONFIG or ./enclave.toml."),
    )] = None,
) -> None:
    """Print the settings in force (file, environment and defaults) as TOML, secrets masked."""
    typer.echo(effective_toml(load_settings(config)), nl=False)


@app.command("reference", help=_(
    "Print the markdown reference of every setting (docs/configuration.md)."))
def reference() -> None:
    """Print the markdown reference of every setting (docs/configuration.md)."""
    typer.echo(reference_markdown(), nl=False)
