"""Frozen configuration dataclasses, one per subsystem, validated once at the edge.

Values discovered at run time (number of KV blocks, eos ids, the model's context length) live
in new objects built from these, never written back.
"""

from __future__ import annotations

from dataclasses import dataclass

from localseek.errors import ConfigError

_DTYPES = ("auto", "float32", "bfloat16", "float16")
# auto: a quantized GGUF's blocks kept and multiplied as stored where the native kernel runs
# (gguf), else exact weights; gguf: insist on that; none: weights dequantized exactly;
# int8 / int4: requantized after load (lossy, opt-in). See models/linear_methods.py.
QUANTIZATION_METHODS = ("auto", "gguf", "none", "int8", "int4")
# How GGUF block matmuls of up to 4 rows (decode) quantize the activations: q16 in two int8
# levels (~15 bits, matches the exactly dequantized model), q8 in one (llama.cpp's Q8_K
# precision: ~1.2x faster matmuls, top-1 0.93 against the exact model on the demo).
GGUF_ACTIVATIONS = {"q16": 2, "q8": 1}


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and how."""

    model: str  # HF directory, .gguf file, or Hub id
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    device: str = "auto"  # auto: cuda if available, else cpu
    max_model_len: int | None = None  # None: the model's own context length
    trust_remote_code: bool = False  # accepted for CLI compatibility; never executes remote code
    quantization: str = "auto"  # one of QUANTIZATION_METHODS: how linear weights are kept
    gguf_activations: str = "q16"  # a GGUF_ACTIVATIONS key

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.quantization not in QUANTIZATION_METHODS:
            raise ConfigError(
                f"quantization must be one of {QUANTIZATION_METHODS}, got {self.quantization!r}"
            )
        if self.gguf_activations not in GGUF_ACTIVATIONS:
            raise ConfigError(
                f"gguf_activations must be one of {tuple(GGUF_ACTIVATIONS)}, "
                f"got {self.gguf_activations!r}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ConfigError(f"max_model_len must be >= 1, got {self.max_model_len}")


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache."""

    block_size: int = 16  # tokens per KV block
    enable_prefix_caching: bool = True
    kv_cache_tokens: int | None = None  # pool size in tokens; None: from kv_cache_memory_fraction
    # Fraction of free memory (GPU) or of total RAM (CPU) given to the KV pool when
    # kv_cache_tokens is not set.
    kv_cache_memory_fraction: float = 0.9
    kv_cache_max_bytes: int | None = 2 << 30  # upper bound on CPU so a laptop is not swamped

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"block_size must be a power of two >= 1, got {self.block_size}")
        if self.kv_cache_tokens is not None and self.kv_cache_tokens < self.block_size:
            raise ConfigError(
                f"kv_cache_tokens must be >= block_size ({self.block_size}), "
                f"got {self.kv_cache_tokens}"
            )
        if not 0.0 < self.kv_cache_memory_fraction <= 1.0:
            raise ConfigError(
                f"kv_cache_memory_fraction must be in (0, 1], got {self.kv_cache_memory_fraction}"
            )


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching limits."""

    max_num_seqs: int = 64  # sequences running at once
    max_num_batched_tokens: int = 2048  # tokens computed per step (prefill chunks + decodes)
    enable_chunked_prefill: bool = True

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ConfigError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ConfigError(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs; built once by LLM(...) or the CLI."""

    model: ModelConfig
    cache: CacheConfig = CacheConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    show_progress: bool = True
