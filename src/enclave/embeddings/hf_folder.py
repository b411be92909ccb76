"""Read and check a Hugging Face BERT sentence-embedding folder before it is converted to GGUF.

The folder layout is the one sentence-transformers saves: ``config.json``, ``model.safetensors``,
a WordPiece vocabulary (``vocab.txt`` or ``tokenizer.json``), and optionally ``modules.json``,
``sentence_bert_config.json`` and a pooling folder. Every check that can fail runs here, at
start-up, so an unsupported folder is reported before the server accepts requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import PoolingType

from enclave.errors import ConfigError, reason

SUPPORTED_MODEL_TYPES = ("bert",)
WEIGHTS_FILE = "model.safetensors"

# sentence-transformers module classes that the GGUF graph reproduces. modules.json names them
# by their full import path, which changed between sentence-transformers releases, so only the
# class name is compared. A Dense or other projection module would change the vectors, so
# folders with one are rejected.
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")

# Pooling modes of sentence-transformers' Pooling config mapped to llama.cpp's. Older configs
# set one boolean pooling_mode_<mode> key, newer ones a pooling_mode string.
_POOLING_MODES = {
    "mean": PoolingType.MEAN,
    "cls": PoolingType.CLS,
    "lasttoken": PoolingType.LAST,
}
_LEGACY_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
_SPECIAL_TOKENS = {
    "cls": "[CLS]",
    "sep": "[SEP]",
    "unk": "[UNK]",
    "pad": "[PAD]",
    "mask": "[MASK]",
}


@dataclass(frozen=True)
class SentenceBertFolder:
    """The contents of a checked folder that the converter needs."""

    path: Path
    config: dict[str, Any]
    weights: Path
    vocab: list[str]
    special_token_ids: dict[str, int]
    max_seq_length: int
    pooling: PoolingType

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def source_files(self) -> list[Path]:
        """Files whose content determines the converted GGUF file."""
        names = ("config.json", WEIGHTS_FILE, "vocab.txt", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "modules.json",
                 "sentence_bert_config.json")
        return [self.path / name for name in names if (self.path / name).is_file()]


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_folder(path: Path) -> SentenceBertFolder:
    """Check a folder and return its contents; raise ConfigError naming what is unsupported."""
    config = _read_json_object(path / "config.json")
    _check_architecture(path, config)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(
            f"{path} has no {WEIGHTS_FILE}. Enclave converts safetensors weights only "
            "(pickled pytorch_model.bin files are not loaded). Save the model with "
            "safe_serialization=True, or point embeddings.model at a GGUF file."
        )

    tokenizer_config = _read_json_if_present(path / "tokenizer_config.json")
    _check_lower_case(path, tokenizer_config)
    vocab = _read_vocab(path)
    modules = _read_modules(path)
    return SentenceBertFolder(
        path=path,
        config=config,
        weights=weights,
        vocab=vocab,
        special_token_ids=_special_token_ids(path, vocab, tokenizer_config),
        max_seq_length=_max_seq_length(path, config, tokenizer_config),
        pooling=_pooling(path, modules),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; the model folder is incomplete.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {reason(exc)}.") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a JSON object.")
    return data


def _read_json_if_present(path: Path) -> dict[str, Any]:
    return _read_json_object(path) if path.is_file() else {}


def _check_architecture(path: Path, config: dict[str, Any]) -> None:
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type not in SUPPORTED_MODEL_TYPES:
        described = ", ".join(architectures) or f"model_type {model_type!r}"
        raise ConfigError(
            f"The embedding model in {path} is {described}, which Enclave cannot convert: "
            "only BERT models (model_type 'bert', such as all-MiniLM-L6-v2 or "
            "bge-small-en-v1.5) are supported. Convert the model to GGUF with llama.cpp's "
            "converter and set embeddings.model to the .gguf file."
        )

    # llama.cpp's BERT graph has GELU feed-forward layers and absolute position embeddings.
    activation = config.get("hidden_act", "gelu")
    positions = config.get("position_embedding_type", "absolute")
    if activation != "gelu" or positions != "absolute":
        raise ConfigError(
            f"The BERT model in {path} uses activation {activation!r} and {positions!r} "
            "position embeddings; llama.cpp's BERT graph implements gelu and absolute only."
        )
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "max_position_embeddings"):
        if not isinstance(config.get(key), int):
            raise ConfigError(f"{path / 'config.json'} lacks the integer {key}.")


def _check_lower_case(path: Path, tokenizer_config: dict[str, Any]) -> None:
    # Enclave's WordPiece tokenizer (wordpiece.py) implements the uncased BERT tokenizer,
    # which lowercases and strips accents.
    lower_case = tokenizer_config.get("do_lower_case", True)
    strip_accents = tokenizer_config.get("strip_accents")
    if lower_case and strip_accents is not False:
        return
    raise ConfigError(
        f"The tokenizer in {path} is cased (do_lower_case false or strip_accents false), but "
        "Enclave implements the uncased BERT tokenizer only, so the vectors would differ "
        "from the original model. Choose an uncased BERT model."
    )


def _read_vocab(path: Path) -> list[str]:
    vocab_file = path / "vocab.txt"
    if vocab_file.is_file():
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines

    tokenizer = _read_json_if_present(path / "tokenizer.json")
    model = tokenizer.get("model") or {}
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise ConfigError(
            f"{path} has neither vocab.txt nor a WordPiece tokenizer.json; a BERT "
            "WordPiece vocabulary is required."
        )
    by_id = {int(token_id): token for token, token_id in model["vocab"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ConfigError(f"The vocabulary in {path / 'tokenizer.json'} has gaps in its ids.")
    return [by_id[token_id] for token_id in range(len(by_id))]


def _special_token_ids(
    path: Path, vocab: list[str], tokenizer_config: dict[str, Any]
) -> dict[str, int]:
    index = {token: token_id for token_id, token in enumerate(vocab)}
    ids: dict[str, int] = {}
    for role, default in _SPECIAL_TOKENS.items():
        token = tokenizer_config.get(f"{role}_token", default)
        if isinstance(token, dict):  # older tokenizers store an AddedToken object
            token = token.get("content", default)
        if token not in index:
            raise ConfigError(
                f"The {role} token {token!r} of {path} is not in its vocabulary; the "
                "tokenizer files do not belong together."
            )
        ids[role] = index[token]
    return ids


def _max_seq_length(path: Path, config: dict[str, Any], tokenizer_config: dict[str, Any]) -> int:
    """Return the token limit sentence-transformers truncates inputs to, special tokens included.

    sentence-transformers takes max_seq_length from sentence_bert_config.json, else the
    tokenizer's model_max_length; both are capped at the model's position embeddings.
    """
    positions = int(config.get("max_position_embeddings", 512))
    st_config = _read_json_if_present(path / "sentence_bert_config.json")
    limit = st_config.get("max_seq_length") or tokenizer_config.get("model_max_length")
    if not isinstance(limit, int) or limit <= 0:
        return positions
    return min(limit, positions)


def _module_class(module: dict[str, Any]) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _read_modules(path: Path) -> list[dict[str, Any]]:
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return []
    items = _read_json(modules_file)
    if not isinstance(items, list):
        raise ConfigError(f"{modules_file} must contain a JSON list of modules.")
    modules = [item for item in items if isinstance(item, dict)]
    for module in modules:
        if _module_class(module) not in _SUPPORTED_MODULES:
            raise ConfigError(
                f"{modules_file} contains a {module.get('type')} module, which Enclave cannot "
                "run: only Transformer, Pooling and Normalize modules are supported."
            )
    return modules


def _pooling(path: Path, modules: list[dict[str, Any]]) -> PoolingType:
    """Return the pooling of the Pooling module; mean when the folder has none."""
    pooling_modules = [module for module in modules if _module_class(module) == "Pooling"]
    if not pooling_modules:
        return PoolingType.MEAN
    config_file = path / str(pooling_modules[0].get("path", "")) / "config.json"
    config = _read_json_object(config_file)

    mode = config.get("pooling_mode")
    if mode is None:
        enabled = [name for flag, name in _LEGACY_POOLING_FLAGS.items() if config.get(flag)]
        mode = enabled[0] if len(enabled) == 1 else enabled or "mean"
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if not isinstance(mode, str) or mode not in _POOLING_MODES:
        raise ConfigError(
            f"{config_file} selects pooling {mode!r}, which llama.cpp does not implement; only "
            "one of mean, cls and lasttoken is supported."
        )
    return _POOLING_MODES[mode]
