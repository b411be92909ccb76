"""Entry point of the ``enclave`` command.

Domain errors become one readable line and exit status 2 here, at a single boundary; set
ENCLAVE_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from enclave import __version__
from enclave.cli import audit, redact, serve
from enclave.cli import config as config_command
from enclave.cli import doctor as doctor_command
from enclave.cli import keys as keys_command
from enclave.cli import plan as plan_command
from enclave.cli import profile as profile_command
from enclave.cli import quantize as quantize_commands
from enclave.errors import EnclaveError
from enclave.i18n import _
from enclave.ops import egress

app = typer.Typer(
    name="enclave",
    help="Run language models on your own hardware behind OpenAI- and Ollama-compatible APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(config_command.app, name="config")
app.command("redact")(redact.redact)
app.add_typer(audit.app, name="audit")
app.command("plan")(plan_command.plan)
app.command("quantize")(quantize_commands.quantize)
app.command("convert")(quantize_commands.convert)
app.command("eval-quant")(quantize_commands.eval_quant)
app.command("profile")(profile_command.profile)
app.add_typer(keys_command.app, name="keys")
app.command("doctor")(doctor_command.doctor)


@app.callback()
def guard_egress() -> None:
    # Every command runs offline: connections beyond loopback and egress.allow fail. serve and
    # doctor install the guard again with the settings of their --config file.
    egress.install_from_environment()


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
