"""Settings: one typed object read from a TOML file and ENCLAVE_* environment variables.

Precedence, highest first: command-line options (applied by the CLI), environment variables,
the TOML file, defaults. Nested keys use a double underscore in the environment, so
``[engine] parallel = 4`` in the file is ``ENCLAVE_ENGINE__PARALLEL=4`` in the environment.
The file is ``--config PATH``, else ``$ENCLAVE_CONFIG``, else ``./enclave.toml`` if present.

Every default is the privacy-safe choice: loopback only, no prompt text in logs.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from enclave.access.settings import AccessSettings
from enclave.audit.settings import AuditSettings
from enclave.embeddings.settings import EmbeddingsSettings
from enclave.errors import ConfigError
from enclave.i18n import _
from enclave.metrics.settings import MetricsSettings
from enclave.ops.egress import EgressSettings
from enclave.planner.settings import PlannerSettings
from enclave.policy.settings import PrivacySettings
from enclave.section import Section

DEFAULT_CONFIG_FILE = Path("enclave.toml")
ENV_PREFIX = "ENCLAVE_"


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address to listen on. Anything but loopback "
                      "is an explicit choice.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free port.")
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser; empty allows none.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level written to the log. Prompt text appears only at "
        "debug, and only where a subsystem says so.")
    log_format: Literal["text", "json"] = Field("text", description="json writes one JSON "
                                                "object per line.")
    max_body_mb: float = Field(8.0, gt=0, description="Largest request body in MB "
                               "(10^6 bytes); a larger one is rejected with 413 before it is "
                               "read in full.")
    locale: str | None = Field(None, description="Language of CLI messages and web pages "
                               "(en or zh-CN); default from LANG.")

    def is_loopback(self) -> bool:
        """Return whether the listening address accepts connections from this host only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class EngineSettings(Section):
    model: str | None = Field(
        None,
        description="GGUF file to serve, or the id of a model in models_dir. "
        "Default: the embedded SmolLM2-135M-Instruct.",
    )
    models_dir: Path | None = Field(None, description="Folder whose *.gguf files are served "
                                    "as further models, loaded on first use.")
    context_size: int = Field(4096, ge=64, description="Maximum tokens of one request, prompt "
                              "and answer together; capped at the model's training context.")
    parallel: int = Field(8, ge=1, le=256, description="Sequences decoded together in one "
                          "batch (continuous batching slots).")
    kv_cache_tokens: int | None = Field(
        None, ge=64, description="KV-cache cells shared by all slots. Default: "
        "context_size x parallel.",
    )
    flash_attention: Literal["auto", "on", "off"] = Field(
        "auto", description="llama.cpp's flash attention. auto: off when no layers are on a "
        "GPU, so repeated requests give the same answer (docs/engine.md), and llama.cpp's "
        "own choice when layers are offloaded.",
    )
    repack_weights: Literal["auto", "on", "off"] = Field(
        "auto", description="Let llama.cpp repack weights into CPU-specific layouts "
        "(AVX2/AVX-512 interleaving, Intel AMX tiles) for faster prompt processing. auto: "
        "on, except with a llama.cpp build that has AMX kernels, which crashed in testing.",
    )
    kv_unified: bool = Field(False, description="One KV buffer shared by all slots. Sharing "
                             "a prefix is then free, but an answer depends on what other slots "
                             "hold, so repeated requests can differ.")
    threads: int | None = Field(None, ge=1, description="CPU threads for decoding. Default: "
                                "the number of CPU cores available to the process. llama.cpp's "
                                "threads spin while they wait, so another busy process on the "
                                "same cores can slow decoding several times (docs/engine.md).")
    batch_size: int = Field(512, ge=16, description="Maximum tokens in one llama_decode call.")
    prefill_chunk: int = Field(256, ge=8, description="Maximum prompt tokens prefilled per "
                               "step while other sequences are decoding.")
    queue_size: int = Field(64, ge=0, description="Requests that may wait for a free slot; "
                            "more are rejected with 429.")
    request_timeout_s: float | None = Field(
        600.0, gt=0, description="Deadline of one request in seconds, queue wait included; "
        "a request can lower it with the X-Request-Timeout header.",
    )
    default_max_tokens: int | None = Field(None, ge=1, description="Tokens to generate when "
                                           "a request sets no limit. Default: the rest of "
                                           "the context.")
    chat_template: str | None = Field(
        None, description="Named template (chatml, llama3, ...) or a .jinja file that "
        "overrides the template stored in the GGUF file.",
    )
    gpu_layers: int = Field(0, ge=-1, description="Layers to offload to a GPU; -1 offloads "
                            "all. Needs a GPU build of llama-cpp-python.")
    max_loaded_models: int = Field(2, ge=1, description="Models kept in memory at once; the "
                                   "least recently used idle one is unloaded.")
    reasoning: Literal["auto", "off"] = Field(
        "auto", description="auto returns <think> reasoning apart from the answer for models "
        "whose chat template uses <think>; off returns the raw text as the answer.",
    )
    reasoning_overrides: dict[str, Literal["auto", "off"]] = Field(
        default_factory=dict, description="Per-model reasoning setting, keyed by model id.",
    )
    request_grammar: bool = Field(
        False, description="Accept a GBNF 'grammar' in chat requests, as llama.cpp's server "
        "does. Off by default: a crafted grammar can make sampling slow for every request.",
    )

    def reasoning_for(self, model_id: str) -> Literal["auto", "off"]:
        """Return the reasoning setting of one model."""
        return self.reasoning_overrides.get(model_id, self.reasoning)

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(_("folder {folder!r} does not exist; create it or fix the path",
                               folder=str(value)))
        return value

    @model_validator(mode="after")
    def _chunk_fits_batch(self) -> EngineSettings:
        if self.prefill_chunk > self.batch_size:
            raise ValueError(_(
                "prefill_chunk ({prefill_chunk}) must not exceed batch_size ({batch_size}); "
                "lower prefill_chunk or raise batch_size", prefill_chunk=self.prefill_chunk,
                batch_size=self.batch_size,
            ))
        return self

    def total_kv_tokens(self) -> int:
        """Return the KV-cache cells to allocate for all slots together."""
        return self.kv_cache_tokens or self.context_size * self.parallel


def default_data_dir() -> Path:
    """Return $XDG_DATA_HOME/enclave, or ~/.local/share/enclave."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "enclave"


class Settings(BaseSettings):
    """Every setting of Enclave, grouped in sections as in the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir, description="Folder of keys, "
                           "audit records and other state.")
    server: ServerSettings = Field(default_factory=lambda: ServerSettings())
    engine: EngineSettings = Field(default_factory=lambda: EngineSettings())
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings())
    privacy: PrivacySettings = Field(default_factory=lambda: PrivacySettings())
    embeddings: EmbeddingsSettings = Field(default_factory=lambda: EmbeddingsSettings())
    audit: AuditSettings = Field(default_factory=lambda: AuditSettings())
    planner: PlannerSettings = Field(default_factory=lambda: PlannerSettings())
    access: AccessSettings = Field(default_factory=lambda: AccessSettings())
    egress: EgressSettings = Field(default_factory=lambda: EgressSettings())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file is passed in through init_settings by load_settings, so the
        # environment must rank above it: the order here is highest first.
        return (env_settings, init_settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(_("Settings file {path} not found. Create it or pass --config.",
                            path=path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_("Settings file {path} is not valid TOML: {error}.", path=path,
                            error=exc)) from None


def _describe(error: ValidationError, source: str) -> str:
    lines = [_("Invalid settings ({source}):", source=source)]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        env_name = ENV_PREFIX + "__".join(str(part) for part in item["loc"]).upper()
        lines.append(_("  {key} = {value!r}: {message} (file key {key} or {env_name})",
                       key=key, value=item.get("input"), message=_validation_message(item),
                       env_name=env_name))
    return "\n".join(lines)


def _describe_option(error: ValidationError, section: str) -> str:
    """Describe an invalid command-line value, which is checked when it is assigned."""
    lines = [_("Invalid command-line option:")]
    for item in error.errors():
        key = ".".join([section, *(str(part) for part in item["loc"])])
        lines.append(_("  {key} = {value!r}: {message}", key=key, value=item.get("input"),
                       message=_validation_message(item)))
    return "\n".join(lines)


def _validation_message(item: ErrorDetails) -> str:
    """Return pydantic's message for one invalid value, translated for the common types.

    The English templates repeat pydantic 2's own wording, except for the list of choices of
    a Literal. A message raised by a validator is passed through as it is, so it is
    translated only if the validator translated it.
    """
    kind = item["type"]
    # pydantic prints a whole-number float bound such as 0.0 as 0.
    context = {key: int(value) if isinstance(value, float) and value.is_integer() else value
               for key, value in item.get("ctx", {}).items()}
    if kind == "extra_forbidden":
        return _("unknown setting; check the spelling against docs/configuration.md")
    if kind == "literal_error":
        # pydantic joins the last two choices with "or", so they are rejoined with commas to
        # read the same in every language.
        choices = str(context.get("expected", "")).replace(" or ", ", ")
        return _("Input should be one of: {choices}", choices=choices)
    # The templates stay unformatted here because each type has its own ctx keys.
    templates = {
        "greater_than": _("Input should be greater than {gt}"),
        "greater_than_equal": _("Input should be greater than or equal to {ge}"),
        "less_than": _("Input should be less than {lt}"),
        "less_than_equal": _("Input should be less than or equal to {le}"),
        "int_parsing": _("Input should be a valid integer, unable to parse string as an "
                         "integer"),
        "int_from_float": _("Input should be a valid integer, got a number with a fractional "
                            "part"),
        "float_parsing": _("Input should be a valid number, unable to parse string as a "
                           "number"),
        "bool_parsing": _("Input should be a valid boolean, unable to interpret input"),
        "string_type": _("Input should be a valid string"),
        "list_type": _("Input should be a valid list"),
        "dict_type": _("Input should be a valid dictionary"),
        "missing": _("Field required"),
    }
    template = templates.get(kind)
    if template is None:
        return item["msg"].removeprefix("Value error, ")
    return template.format(**context)


def config_path(explicit: Path | None) -> Path | None:
    """Return the settings file to read: explicit, $ENCLAVE_CONFIG, ./enclave.toml, or none."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_PREFIX + "CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming every invalid value.

    ``overrides`` are nested dicts of command-line values; they rank above everything else.
    """
    file_path = config_path(path)
    data = _read_toml(file_path) if file_path else {}
    source = _("file {path} and {prefix}* environment", path=file_path, prefix=ENV_PREFIX) if (
        file_path) else _("{prefix}* environment and defaults", prefix=ENV_PREFIX)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    for section, values in (overrides or {}).items():
        target = getattr(settings, section)
        for key, value in values.items():
            try:
                setattr(target, key, value)
            except ValidationError as exc:
                raise ConfigError(_describe_option(exc, section)) from None
    return settings
