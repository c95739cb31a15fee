"""The OpenAI-compatible HTTP server (`localseek serve`)."""
