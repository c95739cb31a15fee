"""Weight formats: HF safetensors directories, GGUF files, tokenizers."""
