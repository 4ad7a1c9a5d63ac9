"""gptoss_runtime."""
