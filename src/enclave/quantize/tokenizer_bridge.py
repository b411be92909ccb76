"""Byte-level BPE vocabularies between GGUF metadata and Hugging Face ``tokenizer.json``.

GGUF stores a byte-level BPE vocabulary (llama.cpp's "gpt2" tokenizer model) as
``tokenizer.ggml.tokens`` in id order, ``token_type`` per token and ``merges`` as
"left right" strings. ``tokenizer.ggml.pre`` names the pre-tokenizer, which splits text
before BPE. A Hugging Face fast tokenizer keeps the same vocabulary and merges in
tokenizer.json and describes the pre-tokenizer as a structure. SentencePiece vocabularies
(llama.cpp's "llama" model, Llama 2's tokenizer.model) are not handled here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from enclave.quantize.errors import QuantizeError

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

# Hint that `enclave convert --format hf` writes into tokenizer_config.json, so converting the
# folder back to GGUF keeps llama.cpp's pre-tokenizer name exactly.
PRE_TOKENIZER_HINT = "gguf_pre_tokenizer"

# The pre-tokenizer regular expression of Llama 3 (llama.cpp name "llama-bpe").
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
                 r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer_json(pre: str) -> dict[str, Any]:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    if pre == "smollm":
        # SmolLM splits digits one by one before the GPT-2 byte-level split.
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
    if pre == "llama-bpe":
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _LLAMA3_SPLIT}, "behavior": "Isolated",
             "invert": False},
            {**byte_level, "use_regex": False}]}
    return byte_level


def _infer_pre(pre_tokenizer: dict[str, Any] | None) -> str | None:
    """Return llama.cpp's name for a tokenizer.json pre-tokenizer structure, if known."""
    if not pre_tokenizer:
        return None
    if pre_tokenizer.get("type") == "ByteLevel":
        return "gpt2"
    if pre_tokenizer.get("type") != "Sequence":
        return None
    parts = pre_tokenizer.get("pretokenizers", [])
    kinds = [part.get("type") for part in parts]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and parts[0].get("pattern", {}).get("Regex") == (
            _LLAMA3_SPLIT):
        return "llama-bpe"
    return None


def _has_byte_level(pre_tokenizer: dict[str, Any] | None) -> bool:
    if not pre_tokenizer:
        return False
    if pre_tokenizer.get("type") == "ByteLevel":
        return True
    return any(part.get("type") == "ByteLevel" for part in pre_tokenizer.get("pretokenizers", []))


def write_hf_tokenizer(metadata: dict[str, Any], folder: Path, context_length: int) -> None:
    """Write tokenizer.json and tokenizer_config.json from GGUF tokenizer metadata."""
    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise QuantizeError(f"The GGUF tokenizer model is {model!r}; Enclave exports only "
                            "byte-level BPE ('gpt2') vocabularies to tokenizer.json.")
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    types: list[int] = list(metadata.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens)))
    merges: list[str] = list(metadata.get("tokenizer.ggml.merges", []))
    pre = str(metadata.get("tokenizer.ggml.pre", "gpt2"))

    added = [
        {"id": index, "content": token, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": kind == CONTROL}
        for index, (token, kind) in enumerate(zip(tokens, types, strict=True))
        if kind in (CONTROL, USER_DEFINED)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer_json(pre),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {token: index for index, token in enumerate(tokens)},
            "merges": [merge.split(" ", 1) for merge in merges],
        },
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False),
                                           encoding="utf-8")

    def token_text(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "bos_token": token_text("bos"),
        "eos_token": token_text("eos"),
        "unk_token": token_text("unknown"),
        "pad_token": token_text("padding"),
        PRE_TOKENIZER_HINT: pre,
    }
    if "tokenizer.chat_template" in metadata:
        config["chat_template"] = metadata["tokenizer.chat_template"]
    (folder / "tokenizer_config.json").write_text(
        json.dumps({key: value for key, value in config.items() if value is not None},
                   indent=2, ensure_ascii=False), encoding="utf-8")


def _token_id(value: Any, vocab: dict[str, int]) -> int | None:
    if isinstance(value, dict):
        value = value.get("content")
    if isinstance(value, str):
        return vocab.get(value)
    return None


def read_hf_tokenizer(folder: Path, vocab_size: int, config: dict[str, Any],
                      pre_override: str | None) -> dict[str, Any]:
    """Return GGUF tokenizer metadata (key -> value) for a folder's tokenizer.json."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise QuantizeError(f"{folder} has no tokenizer.json; Enclave converts byte-level BPE "
                            "tokenizers only (SentencePiece tokenizer.model is not supported).")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE" or not _has_byte_level(tokenizer.get("pre_tokenizer")):
        raise QuantizeError(f"{path} is not a byte-level BPE tokenizer; Enclave converts only "
                            "those (as llama.cpp's 'gpt2' tokenizer model).")
    tokenizer_config_path = folder / "tokenizer_config.json"
    tokenizer_config = (json.loads(tokenizer_config_path.read_text(encoding="utf-8"))
                        if tokenizer_config_path.is_file() else {})

    vocab: dict[str, int] = dict(model["vocab"])
    for entry in tokenizer.get("added_tokens", []):
        vocab[entry["content"]] = int(entry["id"])
    size = max(vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{index}]" for index in range(size)]
    types = [UNUSED] * size
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = NORMAL
    for entry in tokenizer.get("added_tokens", []):
        types[int(entry["id"])] = CONTROL if entry.get("special") else USER_DEFINED

    pre = (pre_override or tokenizer_config.get(PRE_TOKENIZER_HINT)
           or _infer_pre(tokenizer.get("pre_tokenizer")))
    if pre is None:
        raise QuantizeError(f"Cannot tell which llama.cpp pre-tokenizer matches {path}; pass "
                            "--tokenizer-pre NAME (for example llama-bpe, smollm or gpt2).")
    merges = [" ".join(merge) if isinstance(merge, list) else str(merge)
              for merge in model.get("merges", [])]

    metadata: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.add_bos_token": bool(tokenizer_config.get("add_bos_token", False)),
    }
    for key, config_key in (("bos", "bos_token"), ("eos", "eos_token"),
                            ("unknown", "unk_token"), ("padding", "pad_token")):
        token_id = _token_id(tokenizer_config.get(config_key), vocab)
        if token_id is None and isinstance(config.get(f"{config_key}_id"), int):
            token_id = int(config[f"{config_key}_id"])
        if token_id is not None:
            metadata[f"tokenizer.ggml.{key}_token_id"] = token_id
    if isinstance(tokenizer_config.get("chat_template"), str):
        metadata["tokenizer.chat_template"] = tokenizer_config["chat_template"]
    return metadata
