"""`localseek eval`: a golden set against one or two OpenAI-compatible endpoints, scored."""
