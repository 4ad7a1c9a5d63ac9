"""The `gpt_oss` Triton model (Python backend, decoupled): harmony in, streamed channel deltas out."""
