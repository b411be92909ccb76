"""A GGUF model loaded into llama.cpp: weights, vocabulary, metadata and tokenizer."""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from pathlib import Path

import llama_cpp

from enclave.errors import ModelLoadError

logger = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False

# ggml log levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
# llama.cpp's info lines (every metadata key at load) are too chatty for INFO, so they go to DEBUG.
_LLAMA_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
# Warnings that do not apply to how Enclave uses llama.cpp. With a unified KV cache the
# per-sequence context is the whole cache, but Enclave caps each request at context_size.
_EXPECTED_WARNINGS = ("possible training context overflow",)
_llama_logger = logging.getLogger("enclave.llama_cpp")
_last_level = logging.DEBUG


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    global _last_level
    python_level = _last_level if level == 5 else _LLAMA_LOG_LEVELS.get(level, logging.DEBUG)
    _last_level = python_level
    message = text.decode("utf-8", errors="replace").rstrip()
    if any(expected in message for expected in _EXPECTED_WARNINGS):
        python_level = logging.DEBUG
    if message and message != ".":
        _llama_logger.log(python_level, "%s", message)


def init_backend() -> None:
    """Initialise llama.cpp once per process and route its log into Python logging."""
    global _backend_ready
    with _backend_lock:
        if _backend_ready:
            return
        llama_cpp.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def amx_kernels_built() -> bool:
    """Return True when this llama.cpp build multiplies quantized weights with Intel AMX."""
    init_backend()
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def repack_by_default() -> bool:
    """Return whether weights are repacked into CPU-specific layouts when no setting chooses.

    Repacking is llama.cpp's "extra buffer types": interleaved AVX2/AVX-512 layouts and,
    where the build has them, Intel AMX tiles.
    """
    if not amx_kernels_built():
        return True
    # NOTE: llama.cpp's AMX kernels crashed (SIGSEGV in ggml_backend_amx_mul_mat) on every
    # Q4_0, Q4_1, Q8_0 and Q4_K_M model tried, with llama-cpp-python 0.3.36 compiled with
    # -march=native on a 2-core Xeon VM with AMX. F16 models, which AMX does not handle, ran.
    logger.info("This llama.cpp build has Intel AMX kernels; weight repacking is off to "
                "avoid them. Set engine.repack_weights = \"on\" to use them.")
    return False


class LlamaModel:
    """Weights and vocabulary of one GGUF file. Thread-safe for tokenization."""

    def __init__(self, path: Path, *, gpu_layers: int = 0, vocab_only: bool = False,
                 repack: bool | None = None) -> None:
        init_backend()
        if not path.is_file():
            raise ModelLoadError(f"Model file {path} not found. Pass an existing .gguf file.")
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ModelLoadError(f"{path} is not a GGUF file (its first bytes are not "
                                     "'GGUF'). Convert it with 'enclave convert' first.")

        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 10_000 if gpu_layers < 0 else gpu_layers
        params.vocab_only = vocab_only
        if not vocab_only:
            params.use_extra_bufts = repack_by_default() if repack is None else repack
        pointer = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not pointer:
            raise ModelLoadError(f"llama.cpp could not load {path}; the file may be truncated "
                                 "or use an architecture this llama.cpp build does not know.")
        self.pointer: llama_cpp.llama_model_p | None = pointer
        self.path = path
        self.vocab = llama_cpp.llama_model_get_vocab(pointer)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(pointer))
        self.n_embd = int(llama_cpp.llama_model_n_embd(pointer))
        self.n_layer = int(llama_cpp.llama_model_n_layer(pointer))
        self.n_params = int(llama_cpp.llama_model_n_params(pointer))
        self.size_bytes = int(llama_cpp.llama_model_size(pointer))
        self.bos_token = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos_token = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.metadata = self._read_metadata()
        self._pieces: dict[int, bytes] = {}

    def _read_metadata(self) -> dict[str, str]:
        metadata: dict[str, str] = {}
        buffer = ctypes.create_string_buffer(1 << 16)
        count = llama_cpp.llama_model_meta_count(self.pointer)
        for index in range(count):
            length = llama_cpp.llama_model_meta_key_by_index(
                self.pointer, index, buffer, len(buffer)
            )
            if length < 0:
                continue
            key = buffer.value.decode("utf-8", errors="replace")
            length = llama_cpp.llama_model_meta_val_str_by_index(
                self.pointer, index, buffer, len(buffer)
            )
            if length >= len(buffer):
                large = ctypes.create_string_buffer(length + 1)
                llama_cpp.llama_model_meta_val_str_by_index(self.pointer, index, large, len(large))
                metadata[key] = large.value.decode("utf-8", errors="replace")
            elif length >= 0:
                metadata[key] = buffer.value.decode("utf-8", errors="replace")
        return metadata

    @property
    def chat_template(self) -> str | None:
        """Return the Jinja chat template stored in the GGUF file, if any."""
        return self.metadata.get("tokenizer.chat_template")

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "unknown")

    def token_text(self, token: int) -> str:
        """Return the vocabulary entry of a token, special tokens included."""
        text: bytes | None = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """Maximum UTF-8 length of a vocabulary entry, special tokens included.

        In SentencePiece and BPE vocabularies an entry is never shorter than the text its
        token matches (a byte token such as <0x0A> or BPE's "Ġ" for a space is longer), so a
        text of N characters has at least N / max_token_bytes tokens.
        """
        lengths = (len(llama_cpp.llama_vocab_get_text(self.vocab, token) or b"")
                   for token in range(self.n_vocab))
        return max(lengths, default=1) or 1

    @property
    def bos_text(self) -> str:
        return self.token_text(self.bos_token) if self.bos_token >= 0 else ""

    @property
    def eos_text(self) -> str:
        return self.token_text(self.eos_token) if self.eos_token >= 0 else ""

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Convert text into tokens; add_special adds BOS when the model wants it."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), tokens, capacity, add_special, parse_special
        )
        if count < 0:
            capacity = -count
            tokens = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), tokens, capacity, add_special, parse_special
            )
        return list(tokens[:count])

    def token_bytes(self, token: int) -> bytes:
        """Return the bytes a token stands for; control tokens such as EOS give b''."""
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, 64, 0, False)
            if length < 0:
                buffer = ctypes.create_string_buffer(-length)
                size = -length
                length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, size, 0, False)
            piece = buffer.raw[:length]
            self._pieces[token] = piece
        return piece

    def detokenize(self, tokens: list[int]) -> str:
        """Return the text of a token sequence."""
        return b"".join(self.token_bytes(token) for token in tokens).decode(
            "utf-8", errors="replace"
        )

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.pointer:
            llama_cpp.llama_model_free(self.pointer)
            self.pointer = None
