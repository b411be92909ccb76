"""``enclave serve``: load a model and serve the HTTP APIs."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from enclave.access.listen import check_listen_address
from enclave.config import Settings, load_settings
from enclave.i18n import _, set_locale
from enclave.logs import setup_logging
from enclave.ops import egress

logger = logging.getLogger(__name__)

HELP = _("Serve a model over OpenAI- and Ollama-compatible HTTP APIs.")


def serve(
    model: Annotated[str | None, typer.Option(
        "--model", "-m",
        help=_("GGUF file to serve (default: the embedded SmolLM2-135M-Instruct)."),
    )] = None,
    host: Annotated[str | None, typer.Option(
        help=_("Address to listen on (default 127.0.0.1)."))] = None,
    port: Annotated[int | None, typer.Option(
        help=_("TCP port (default 8000; 0 picks a free one)."))] = None,
    models_dir: Annotated[Path | None, typer.Option(
        "--models-dir", help=_("Folder of further GGUF files to serve."))] = None,
    parallel: Annotated[int | None, typer.Option(
        help=_("Requests decoded together (continuous batching slots)."))] = None,
    context_size: Annotated[int | None, typer.Option(
        "--context-size",
        help=_("Maximum tokens per request, prompt and answer together."))] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c",
        help=_("Settings file (TOML). Default: $ENCLAVE_CONFIG or ./enclave.toml."),
    )] = None,
) -> None:
    """Serve a model over OpenAI- and Ollama-compatible HTTP APIs."""
    overrides: dict[str, dict[str, Any]] = {"server": {}, "engine": {}}
    for section, key, value in (
        ("engine", "model", model), ("server", "host", host), ("server", "port", port),
        ("engine", "models_dir", models_dir), ("engine", "parallel", parallel),
        ("engine", "context_size", context_size),
    ):
        if value is not None:
            overrides[section][key] = value
    settings = load_settings(config, overrides)
    run_server(settings)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket before start-up, so port 0 resolves to a real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from enclave.errors import ConfigError

        raise ConfigError(_(
            "Cannot listen on {host}:{port}: {reason}. Choose another --port or stop the "
            "program that uses it.", host=host, port=port, reason=exc.strerror,
        )) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(settings: Settings) -> None:
    """Bind, build the app and serve until interrupted."""
    from enclave.api.app import create_app

    setup_logging(settings.server.log_level, settings.server.log_format)
    set_locale(settings.server.locale)
    egress.install(settings.egress)
    egress.check_configured_destinations(settings)
    # Before binding: a server that would listen beyond loopback without keys never listens.
    check_listen_address(settings)
    sock = bind_socket(settings.server.host, settings.server.port)
    bound_port = sock.getsockname()[1]
    display_host = f"[{settings.server.host}]" if ":" in settings.server.host else (
        settings.server.host)
    base_url = f"http://{display_host}:{bound_port}"

    app = create_app(settings)
    try:
        app.state.enclave.pool.load_default()
    except BaseException:
        sock.close()
        raise
    app.state.enclave.base_url = base_url
    # The standard asyncio loop: uvloop connects in C, where the egress guard cannot see it.
    config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=10,
                            access_log=False, lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        if server.started:
            await announce(app.state.enclave, base_url)

    server.startup = startup  # type: ignore[method-assign]
    asyncio.run(server.serve(sockets=[sock]))


async def announce(state: Any, base_url: str) -> None:
    """Log the start-up line and tell a person how to connect Cherry Studio."""
    engine = state.pool.loaded()[state.pool.default_id]
    info = engine.info
    keys_required = state.access is not None and await state.access.keys_required()
    logger.info(
        "Serving %s at %s/v1 (context %d tokens, %d parallel slots, API keys %s)",
        info.id, base_url, info.context_size, info.parallel,
        "required" if keys_required else "not required",
        extra={"url": f"{base_url}/v1", "model": info.id, "context_size": info.context_size},
    )
    key_hint = (_("an API key from 'enclave keys create'") if keys_required
                else _("any API key"))
    typer.echo(_(
        "Enclave is serving {model} at {url}/v1 (context {context} tokens).\n"
        "Cherry Studio: Settings > Model Provider > Add, type OpenAI, API address {url}, "
        "{key_hint}; then add the model {model}.",
        model=info.id, url=base_url, context=info.context_size, key_hint=key_hint,
    ), err=True)
