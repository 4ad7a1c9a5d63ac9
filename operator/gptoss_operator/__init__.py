"""gptoss_operator."""
