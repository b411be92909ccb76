"""Entry point of the ``enclave`` command.

Domain errors become one readable line and exit status 2 here, at a single boundary; set
ENCLAVE_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from enclave import __version__
from enclave.cli import serve
from enclave.errors import EnclaveError
from enclave.i18n import _

app = typer.Typer(
    name="enclave",
    help="Run language models on your own hardware behind OpenAI- and Ollama-compatible APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)


@app.command("version")
def version() -> None:
    """Print the Enclave version."""
    typer.echo(__version__)


def run() -> None:
    """Run the CLI, turning Enclave errors into a message and exit status 2."""
    try:
        app()
    except EnclaveError as error:
        if os.environ.get("ENCLAVE_DEBUG"):
            raise
        typer.echo(_("Error: {message}", message=str(error)), err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
