"""GGUF quantization, conversion and measured quality loss.

* ``quantizer``: llama.cpp's quantizer with a progress callback and a requantization guard;
* ``convert``: full-precision GGUF files from a quantized GGUF (dequantization);
* ``hf_convert`` and ``hf_export``: Llama-architecture safetensors folders to GGUF and back;
* ``evaluate`` and ``metrics``: perplexity, KL divergence and top-1 agreement against a
  reference, from full logits computed with llama.cpp;
* ``torch_eval``: the same metrics for PyTorch dynamic INT8 quantization of the HF model.
"""
