"""Hardware planning: memory and decode-rate estimates for a model before buying hardware.

The steps, each in its own module:

* ``architecture``: the shape of a model (layers, heads, KV heads, ...) read from a GGUF
  file, a Hugging Face ``config.json`` or the ``catalogue`` of common models;
* ``mixture``: the tensor types llama.cpp's quantizer picks for each file type, and so the
  weight bytes of a model at Q4_K_M, Q8_0, ...;
* ``memory``: KV cache, compute buffers and runtime overhead, calibrated against llama.cpp;
* ``hardware`` and ``recommend``: accelerators, GPU counts, tensor-parallel splits and
  roofline decode rates;
* ``machine``: whether the current machine can run the plan;
* ``service``: the whole plan for one model.
"""
