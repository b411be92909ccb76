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
from enclave.i18n import _, current_locale
from enclave.ops import egress

# Help texts go through _() when the command modules are imported, before any --config file
# is read, so --help follows the locale of the environment (LC_ALL, LC_MESSAGES, LANG) and
# not the server.locale setting. Each command keeps its docstring for developers, but Typer
# shows the help= text instead, because a docstring cannot be translated.
#
# Rich lays option help out in table cells that break lines only at spaces and crop a longer
# word with "…", which cuts Chinese sentences short. Click's plain layout keeps every
# character, so Chinese help uses it. The root's mode applies to every command group.
app = typer.Typer(
    name="enclave",
    help=_("Run language models on your own hardware behind OpenAI- and Ollama-compatible "
           "APIs."),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None if current_locale() == "zh_CN" else "rich",
)
app.command("serve", help=serve.HELP)(serve.serve)
app.add_typer(config_command.app, name="config")
app.command("redact", help=redact.HELP)(redact.redact)
app.add_typer(audit.app, name="audit")
app.command("plan", help=plan_command.HELP)(plan_command.plan)
app.command("quantize", help=quantize_commands.QUANTIZE_HELP)(quantize_commands.quantize)
app.command("convert", help=quantize_commands.CONVERT_HELP)(quantize_commands.convert)
app.command("eval-quant", help=quantize_commands.EVAL_QUANT_HELP)(quantize_commands.eval_quant)
app.command("profile", help=profile_command.HELP)(profile_command.profile)
app.add_typer(keys_command.app, name="keys")
app.command("doctor", help=doctor_command.HELP)(doctor_command.doctor)


@app.callback()
def guard_egress() -> None:
    # Every command runs offline: connections beyond loopback and egress.allow fail. serve and
    # doctor install the guard again with the settings of their --config file.
    egress.install_from_environment()


@app.command("version", help=_("Print the Enclave version."))
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
