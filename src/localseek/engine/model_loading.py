"""Turning an EngineConfig into a loaded model, its tokenizer and a sized KV pool."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from tqdm import tqdm

from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from localseek.engine.kv_layout import KVLayout, plan_kv_layout
from localseek.engine.kv_sizing import plan_kv_pool
from localseek.engine.runner import ModelRunner, cpu_has_fast_bf16
from localseek.errors import ConfigError
from localseek.models.linear_methods import LinearMethod, choose_linear_method
from localseek.models.registry import resolve_model_class
from localseek.weights.loader import open_model
from localseek.weights.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadedModel:
    """What load time discovered: values found at run time, kept apart from the config."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    device: torch.device
    dtype: torch.dtype
    max_model_len: int
    num_kv_blocks: int  # physical blocks (pages of kv_layout.page_layers layers), null included
    kv_bytes_per_token: int
    vocab_size: int
    kv_layout: KVLayout


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # bf16 halves the bytes every decode step reads and uses the CPU's bf16 dot-product
        # units where it has them (measured 2-2.5x faster per layer than fp32 here).
        fast = device.type == "cuda" or cpu_has_fast_bf16()
        return torch.bfloat16 if fast else torch.float32
    return _DTYPES[name]


def load_model(config: EngineConfig) -> LoadedModel:
    """Open the weights, build the model class for its architecture, size the KV pool."""
    source = open_model(config.model.model)
    device = resolve_device(config.model.device)
    dtype = resolve_dtype(config.model.dtype, device)
    model_cls = resolve_model_class(source.config)
    method = choose_linear_method(
        config.model.quantization, source, device, config.model.gguf_activations
    )
    logger.info("linear weights: %s (%s)", method.name, method.reason)
    with torch.device(device):
        model = model_cls(source.config, dtype, device)
    bar = tqdm(
        total=source.num_tensors,
        desc="Loading weights",
        unit="tensor",
        disable=not config.show_progress,
    )

    def counted():
        for item in source.weights(method.keep_packed):
            yield item
            bar.update(1)

    model.load_weights(counted())
    bar.close()
    model.eval()
    _quantize(model, method)
    _pack(model)
    _gguf_levels(model, method)
    if device.type == "cpu":
        _native_attention()
        _native_decode(model)
    max_model_len = _max_model_len(config.model, model.max_model_len)
    bytes_per_token = ModelRunner.kv_bytes_per_token(model, dtype)
    layout = plan_kv_layout(model.kv_cache_specs())
    # The budget in blocks that hold every layer; a physical block holds one group's
    # page_layers layers, so the same bytes make num_groups times as many of them.
    whole_blocks = _num_kv_blocks(
        config.cache, config.scheduler, bytes_per_token, max_model_len, device
    )
    num_blocks = layout.num_physical_blocks(whole_blocks)
    logger.info(
        "KV pool: %d blocks x %d tokens x %d layers, %d bytes/token over all layers (%.1f MiB); "
        "KV cache groups: %s",
        num_blocks,
        config.cache.block_size,
        layout.page_layers,
        bytes_per_token,
        whole_blocks * config.cache.block_size * bytes_per_token / 2**20,
        layout.describe(),
    )
    full = getattr(model, "uncompressed_kv_values_per_token", None)
    if full is not None:
        full_bytes = full() * torch.tensor([], dtype=dtype).element_size()
        logger.info(
            "MLA latent cache: %d bytes/token; a full K/V cache would need %d (%.0fx more)",
            bytes_per_token,
            full_bytes,
            full_bytes / bytes_per_token,
        )
    vocab_size = int(source.config.get("vocab_size") or source.tokenizer.vocab_size)
    return LoadedModel(
        model=model,
        tokenizer=source.tokenizer,
        device=device,
        dtype=dtype,
        max_model_len=max_model_len,
        num_kv_blocks=num_blocks,
        kv_bytes_per_token=bytes_per_token,
        vocab_size=vocab_size,
        kv_layout=layout,
    )


def _quantize(model: torch.nn.Module, linear_method: LinearMethod) -> None:
    method = linear_method.requantize
    if method is None:
        return
    from localseek.models.quantization import quantize_model

    report = quantize_model(model, method)
    logger.info(
        "Quantized %d linears to %s: weights %.1f -> %.1f MiB (%+.1f MiB); token embedding: %s",
        report.num_linears,
        method,
        report.bytes_before / 2**20,
        report.bytes_after / 2**20,
        (report.bytes_after - report.bytes_before) / 2**20,
        report.embedding,
    )


def _gguf_levels(model: torch.nn.Module, linear_method: LinearMethod) -> None:
    from localseek.models.gguf_linear import GGUFLinear

    for module in model.modules():
        if isinstance(module, GGUFLinear):
            module.levels = linear_method.activation_levels


def _pack(model: torch.nn.Module) -> None:
    from localseek.models.packed_linear import pack_linears

    packed = pack_linears(model)
    if packed:
        logger.info("Packed %d bf16 linears for oneDNN (same results, faster CPU matmuls)", packed)


def _native_attention() -> None:
    """Build (first run on this machine) or load the native decode-attention kernel now, so
    the first request does not pay for it; without one, decoding uses the torch path."""
    from localseek.models.attention import decode_attention_kernel

    if decode_attention_kernel() is not None:
        logger.info("decode attention: native paged kernel (kernels/paged_decode_attention.c)")


def _native_decode(model: torch.nn.Module) -> None:
    """A fused decode step, where the model declares one and its weights allow it."""
    attach = getattr(model, "attach_fused_decode", None)
    if attach is None:
        return
    reason = attach()
    if reason is None:
        logger.info("decode steps: the model's fused native step (%s)", type(model).__name__)
    else:
        logger.debug("fused native decode step not used: %s", reason)


def _max_model_len(config: ModelConfig, native: int) -> int:
    if config.max_model_len is None:
        return native
    if config.max_model_len > native:
        raise ConfigError(
            f"max_model_len {config.max_model_len} exceeds the model's context of {native} tokens"
        )
    return config.max_model_len


def _num_kv_blocks(
    cache: CacheConfig,
    sched: SchedulerConfig,
    bytes_per_token: int,
    max_model_len: int,
    device: torch.device,
) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = int(free * cache.kv_cache_memory_fraction)
    else:
        budget = int(_available_ram() * cache.kv_cache_memory_fraction * 0.5)
        if cache.kv_cache_max_bytes is not None:
            budget = min(budget, cache.kv_cache_max_bytes)
    try:
        plan = plan_kv_pool(
            requested_tokens=cache.kv_cache_tokens,
            max_num_seqs=sched.max_num_seqs,
            max_model_len=max_model_len,
            bytes_per_token=bytes_per_token,
            budget_bytes=budget,
            block_size=cache.block_size,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    logger.info(
        "KV pool sized to %d tokens (%.0f MiB): %s",
        plan.tokens,
        plan.tokens * bytes_per_token / 2**20,
        plan.reason,
    )
    if plan.tokens < max_model_len:
        logger.warning(
            "KV pool (%d tokens) is smaller than the context (%d tokens): long requests will be "
            "refused",
            plan.tokens,
            max_model_len,
        )
    return plan.blocks


def _available_ram() -> int:
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30
