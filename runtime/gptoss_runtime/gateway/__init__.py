"""OpenAI-compatible HTTP gateway in front of Triton's `gpt_oss` model."""
