"""The PyTorch side of ``enclave eval-quant``: a Hugging Face model in float32, and the same
model after ``torch.ao.quantization.quantize_dynamic`` turned its ``nn.Linear`` layers into
INT8 (weights stored as int8 with per-tensor scales, activations quantized on the fly).

Both produce logits for the same token ids as the GGUF models, so their rows join the same
table. PyTorch and transformers are imported only here, on demand: they take seconds to
import and belong to the ``quant`` extra.
"""

from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from enclave.quantize.errors import QuantizeError
from enclave.quantize.metrics import FloatArray


def _import_torch() -> None:
    """Import PyTorch and transformers, so load times do not include import times."""
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError:
        raise QuantizeError("--torch-int8 needs PyTorch and transformers: pip install "
                            "'enclave[quant]'.") from None
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _load(folder: Path, threads: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    if not (folder / "config.json").is_file():
        raise QuantizeError(f"{folder} is not a Hugging Face model folder (no config.json); "
                            "create one with 'enclave convert MODEL.gguf FOLDER --format hf'.")
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                 local_files_only=True)
    model.eval()  # type: ignore[no-untyped-call]
    return model


def _tensor_bytes(value: Any, seen: set[int]) -> int:
    """Return the bytes of a state-dict value: a tensor, or the packed weights of a quantized
    layer (a tuple of tensors). Tensors already in ``seen`` (tied weights) count once."""
    import torch

    if isinstance(value, tuple | list):
        return sum(_tensor_bytes(item, seen) for item in value)
    if not isinstance(value, torch.Tensor):
        return 0
    if value.is_quantized:
        # One int8 value per weight, plus the scale and zero point of the tensor.
        return value.numel() * value.element_size() + 16
    if value.data_ptr() in seen:
        return 0
    seen.add(value.data_ptr())
    return value.numel() * value.element_size()


def _state_bytes(model: Any) -> int:
    """Return the bytes of the model's weights as a saved state dict stores them."""
    seen: set[int] = set()
    return sum(_tensor_bytes(value, seen) for value in model.state_dict().values())


class TorchSource:
    """A transformers causal LM, optionally quantized to dynamic INT8."""

    def __init__(self, folder: Path, threads: int, int8: bool) -> None:
        _import_torch()
        started = time.perf_counter()
        model = _load(folder, threads)
        if int8:
            model = quantize_dynamic_int8(model)
        self.load_seconds = time.perf_counter() - started
        self.model = model
        self.label = f"{folder.name} (PyTorch {'INT8 dynamic' if int8 else 'F32'})"
        self.type_name = "torch-int8" if int8 else "torch-f32"
        self.size_bytes = _state_bytes(model)
        self.n_vocab = int(model.config.vocab_size)
        self.prefill_tokens = 0
        self.prefill_seconds = 0.0
        parameters = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        # One untimed pass, so one-time set-up does not count as prefill time.
        self.window_logits([0, 0])
        self.prefill_tokens = 0
        self.prefill_seconds = 0.0

    def window_logits(self, tokens: list[int]) -> FloatArray:
        import torch

        ids = torch.tensor([tokens], dtype=torch.long)
        started = time.perf_counter()
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0]
        self.prefill_seconds += time.perf_counter() - started
        self.prefill_tokens += len(tokens)
        return np.asarray(logits.float().numpy(), dtype=np.float32)

    def _step(self, ids: Any, cache: Any) -> tuple[Any, Any]:
        """Run one forward pass with a KV cache; return (logits, cache).

        transformers 5 names the cache argument ``cache``; older releases called it
        ``past_key_values``.
        """
        if self._cache_argument == "cache":
            output = self.model(input_ids=ids, cache=cache, use_cache=True)
            return output.logits, output.cache
        output = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        return output.logits, output.past_key_values

    def decode_rate(self, prompt: list[int], count: int) -> float:
        import torch

        with torch.inference_mode():
            logits, cache = self._step(torch.tensor([prompt], dtype=torch.long), None)
            token = logits[0, -1].argmax()
            started = time.perf_counter()
            for _ in range(count):
                logits, cache = self._step(token.view(1, 1), cache)
                token = logits[0, -1].argmax()
            elapsed = time.perf_counter() - started
        return count / elapsed if elapsed else float("inf")

    @property
    def prefill_rate(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    def close(self) -> None:
        self.model = None


def quantize_dynamic_int8(model: Any) -> Any:
    """Return ``model`` with every ``nn.Linear`` replaced by a dynamically quantized INT8 one."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # NOTE: torch.ao.quantization is deprecated in favour of torchao, which Enclave does
        # not install; quantize_dynamic is still the documented eager-mode INT8 recipe here.
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated")
        return quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8)
