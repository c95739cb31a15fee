"""The gateway: one OpenAI-compatible endpoint over many upstreams (never imports torch)."""
