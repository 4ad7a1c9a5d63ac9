"""Generation engines behind the `gpt_oss` Triton model."""
