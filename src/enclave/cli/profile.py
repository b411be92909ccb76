"""``enclave profile``: run a short workload and print where the time goes."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from enclave.cli.table import pad
from enclave.config import load_settings
from enclave.i18n import _
from enclave.logs import setup_logging
from enclave.models.registry import ModelRegistry
from enclave.ops.profile import (
    DEFAULT_PROMPT,
    ProfileReport,
    Workload,
    phase_shares,
    profile_in_process,
    profile_server,
)

DEFAULT_TRACE = Path("enclave-profile.json")

HELP = _("Run a short workload and print where the time goes, phase by phase.")


def profile(
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help=_("GGUF file or model id to profile (default: the configured "
                                "model). With --url: the model id to request (default: the "
                                "first one the server lists)."))] = None,
    url: Annotated[str | None, typer.Option(
        help=_("Base URL of a running Enclave server, e.g. http://127.0.0.1:8000. Without it "
               "the model is loaded in this process."))] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="ENCLAVE_API_KEY", help=_("API key sent with --url requests."),
    )] = None,
    requests: Annotated[int, typer.Option(min=1, help=_("Requests to send."))] = 4,
    concurrency: Annotated[int, typer.Option(min=1, help=_("Requests in flight at once."))] = 1,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", min=1, help=_("Tokens to generate per request."))] = 64,
    prompt: Annotated[str | None, typer.Option(
        help=_("User message of every request."))] = None,
    parallel: Annotated[int | None, typer.Option(
        min=1, help=_("Continuous batching slots (in process only; default engine.parallel)."),
    )] = None,
    ignore_eos: Annotated[bool, typer.Option(
        "--ignore-eos/--stop-at-eos", help=_("Ban end-of-generation tokens so every completion "
                                             "has --max-tokens tokens (in process only)."))]
    = True,
    trace: Annotated[Path, typer.Option(
        help=_("Chrome trace JSON file to write; open it in chrome://tracing or Perfetto."),
    )] = DEFAULT_TRACE,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c",
        help=_("Settings file (TOML). Default: $ENCLAVE_CONFIG or ./enclave.toml."))] = None,
) -> None:
    """Run a short workload and print where the time goes, phase by phase."""
    workload = Workload(requests=requests, concurrency=concurrency, max_tokens=max_tokens,
                        prompt=prompt or DEFAULT_PROMPT, ignore_eos=ignore_eos)
    if url is not None:
        setup_logging("warning")
        report = profile_server(url, workload, model=model, api_key=api_key)
    else:
        overrides: dict[str, dict[str, Any]] = {"engine": {}}
        if model is not None:
            overrides["engine"]["model"] = model
        if parallel is not None:
            overrides["engine"]["parallel"] = parallel
        settings = load_settings(config, overrides)
        setup_logging("warning", settings.server.log_format)
        entry = ModelRegistry(settings.engine).default
        typer.echo(_("Loading {model}...", model=entry.id), err=True)
        report = profile_in_process(entry.id, entry.path, settings.engine, workload)

    report.write_trace(trace)
    print_report(report, workload, url)
    typer.echo(_("Trace written to {path}; open it in chrome://tracing or "
                 "https://ui.perfetto.dev.", path=trace))


def print_report(report: ProfileReport, workload: Workload, url: str | None) -> None:
    """Print the phase table, llama.cpp's counters and the request summary."""
    where = url if url is not None else _("in process")
    typer.echo(_(
        "Profile of {model} ({where}): {requests} requests, {concurrency} at a time, "
        "{seconds:.2f} s",
        model=report.model, where=where, requests=workload.requests,
        concurrency=workload.concurrency, seconds=report.wall_s,
    ))
    _print_phases(report)
    if report.perf is not None:
        _print_perf(report)
    _print_requests(report)


def _print_phases(report: ProfileReport) -> None:
    shares = phase_shares(report)
    typer.echo(pad(_("Phase"), 24) + pad(_("Total ms"), 12, right=True)
               + pad(_("Share"), 9, right=True) + pad(_("Calls"), 8, right=True)
               + pad(_("Mean ms"), 10, right=True))
    for total in report.phases:
        mean_ms = total.seconds * 1000.0 / total.count if total.count else 0.0
        typer.echo(f"{total.name:<24}{total.seconds * 1000.0:>12.1f}"
                   f"{shares.get(total.name, 0.0):>9.1%}{total.count:>8}{mean_ms:>10.2f}")
    typer.echo(_("Shares are of the workload's wall time; phases on different threads or of "
                 "concurrent requests overlap, so they need not add up to 100%."))


def _print_perf(report: ProfileReport) -> None:
    perf = report.perf
    assert perf is not None
    typer.echo(_("llama.cpp counters (llama_perf_context, since the model was loaded):"))
    typer.echo("  " + pad(_("load"), 14) + f"{perf.load_ms:>10.1f} ms")
    for label, milliseconds, tokens in (
        (_("prompt eval"), perf.prompt_eval_ms, perf.prompt_eval_tokens),
        (_("eval"), perf.eval_ms, perf.eval_tokens),
    ):
        rate = tokens / (milliseconds / 1000.0) if milliseconds > 0 else 0.0
        typer.echo("  " + pad(label, 14) + f"{milliseconds:>10.1f} ms"
                   + _(" for {tokens} tokens ({rate:.1f} tokens/s)", tokens=tokens, rate=rate))


def _print_requests(report: ProfileReport) -> None:
    results = report.results
    first_token = [r.time_to_first_token_s for r in results if r.time_to_first_token_s is not None]
    typer.echo(_(
        "Requests: {count}, prompt tokens {prompt}, generated tokens {generated}, "
        "generated tokens/s over the run {rate:.1f}",
        count=len(results),
        prompt=sum(r.prompt_tokens for r in results),
        generated=sum(r.completion_tokens for r in results),
        rate=sum(r.completion_tokens for r in results) / report.wall_s if report.wall_s else 0.0,
    ))
    if first_token:
        typer.echo(_(
            "Time to first token: median {median:.1f} ms, max {maximum:.1f} ms",
            median=statistics.median(first_token) * 1000.0,
            maximum=max(first_token) * 1000.0,
        ))
