"""Hardware sizing from a model config: weights, KV cache (MLA-aware), which accelerators fit, RAM, disk.

Everything is computed from config.json alone, so `localseek plan` works offline and before a
download: the parameter inventory is rebuilt tensor by tensor from the published shapes. The
configs of the DeepSeek family ship in `ops/data/` and are found by name.

Rules (docs/plan.md explains them and compares with common rules of thumb):
- `--quant` compresses the decoder layers' Linear weights; embeddings, lm_head, norms and MoE
  routers stay 16-bit (32-bit for fp32). fp8 adds one float32 scale per 128x128 block (as
  DeepSeek-V3 ships); int4 one 16-bit scale per 128 weights.
- The KV cache is 16-bit (fp32 with --quant fp32). MLA caches kv_lora_rank + qk_rope_head_dim
  values per token and layer; other models 2 x kv_heads x head_dim. A sliding-window layer
  (Gemma 3's local layers, Mistral, Qwen2 with use_sliding_window) holds at most the blocks its
  window spans plus one per sequence: the engine gives older blocks back.
- An accelerator gives 90% of its memory to weights + KV, as the engine's default
  kv_cache_memory_fraction; the rest holds the CUDA context, activations and fragmentation.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from localseek.errors import (
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
    UnsupportedModelError,
)
from localseek.models.sliding_windows import gemma3_layer_windows, layer_windows
from localseek.ops.plan_inventory import (
    DENSE_ARCHITECTURES,
    MLA_ARCHITECTURES,
    TensorGroup,
    inventory,
)

KiB, MiB, GiB = 1024, 1024**2, 1024**3
# Bytes per quantized (Linear) weight; int4 includes one fp16 scale per 128-weight group.
QUANT_BYTES: Mapping[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5 + 2 / 128,
}
FP8_BLOCK = 128  # DeepSeek-V3's weight_block_size: one float32 scale per 128x128 block
USABLE_FRACTION = 0.9  # of each accelerator's memory, for weights + KV
HOST_OVERHEAD_BYTES = 4 * GiB  # OS, Python, torch, tokenizer: added to the RAM figure
KV_BLOCK_TOKENS = 16  # the engine's default block size: windows are held in whole blocks
GPUS_PER_NODE = 8
_CHECKPOINT_QUANT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: int  # total memory as the driver reports it (nvidia-smi / npu-smi)


ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator("RTX 4090 24GB", 24564 * MiB),
    Accelerator("A100 40GB", 40536 * MiB),
    Accelerator("A100 80GB", 81920 * MiB),
    Accelerator("H100 80GB", 81559 * MiB),
    Accelerator("H200 141GB", 143771 * MiB),
    Accelerator("Ascend 910B 64GB", 65536 * MiB),
)


@dataclass(frozen=True)
class AcceleratorFit:
    """How many of one accelerator hold the plan's weights + KV."""

    name: str
    memory_bytes: int
    count: int  # fewest devices whose usable memory holds weights + KV
    tensor_parallel: int  # count rounded up to a power of two (heads split evenly)
    nodes: int  # machines of GPUS_PER_NODE devices for `tensor_parallel` devices


@dataclass(frozen=True)
class Plan:
    """Memory and hardware for one model, quantization and workload. Sizes in bytes."""

    model: str
    architecture: str
    quant: str
    context: int  # tokens per sequence (prompt + output)
    concurrency: int  # sequences held in the KV cache at once
    max_context: int  # the model's max_position_embeddings
    params: int  # loaded parameters (multi-token-prediction layers excluded)
    active_params: int  # used per token (MoE: only the routed experts' share)
    weight_bytes: int
    kv_bytes_per_token: int
    kv_bytes_per_token_uncompressed: int | None  # MLA: what a full K/V cache would need
    sliding_window: int | None  # tokens a sliding-window layer attends to; None: no such layer
    window_layers: int  # how many layers slide (each holds at most window + 1 block of tokens)
    kv_bytes: int  # per sequence: full layers x context + window layers x held; x concurrency
    total_bytes: int  # weight_bytes + kv_bytes: what the accelerators hold
    accelerators: tuple[AcceleratorFit, ...]
    ram_bytes: int  # to serve on CPU (weights + KV + host overhead); ample for GPU serving
    disk_bytes: int  # the checkpoint as published (its dtype, fp8 scales, MTP layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan(
    model_or_config: str, quant: str = "bf16", context: int = 4096, concurrency: int = 1
) -> Plan:
    """Size `model_or_config` (known name, config.json path or model directory) for a workload."""
    if quant not in QUANT_BYTES:
        raise InvalidRequestError(
            f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_BYTES)}",
            param="quant",
        )
    for name, value in (("context", context), ("concurrency", concurrency)):
        if not isinstance(value, int) or value < 1:
            raise InvalidRequestError(
                f"{name} must be a positive integer, got {value!r}", param=name
            )
    name, config = load_plan_config(model_or_config)
    architecture = _architecture(config)
    max_context = int(config.get("max_position_embeddings") or 0)
    if max_context and context > max_context:
        raise InvalidRequestError(
            f"context {context} exceeds {name}'s max_position_embeddings {max_context}",
            param="context",
        )
    groups = inventory(config, architecture)
    kv_per_token, kv_uncompressed = _kv_bytes_per_token(config, architecture, quant)
    weight_bytes = _stored_bytes(groups, quant, include_checkpoint_only=False)
    windows = _layer_windows(config, architecture)
    per_layer = kv_per_token // len(windows)  # every layer caches the same per token
    held = [context if w is None else min(context, _window_tokens(w)) for w in windows]
    kv_bytes = per_layer * sum(held) * concurrency
    sliding = [w for w in windows if w is not None]
    total = weight_bytes + kv_bytes
    return Plan(
        model=name,
        architecture=architecture,
        quant=quant,
        context=context,
        concurrency=concurrency,
        max_context=max_context,
        params=sum(g.numel for g in groups if not g.checkpoint_only),
        active_params=sum(g.active_numel for g in groups if not g.checkpoint_only),
        weight_bytes=weight_bytes,
        kv_bytes_per_token=kv_per_token,
        kv_bytes_per_token_uncompressed=kv_uncompressed,
        sliding_window=max(sliding) if sliding else None,
        window_layers=len(sliding),
        kv_bytes=kv_bytes,
        total_bytes=total,
        accelerators=tuple(_fit(acc, total) for acc in ACCELERATORS),
        ram_bytes=total + HOST_OVERHEAD_BYTES,
        disk_bytes=_stored_bytes(groups, _checkpoint_quant(config), include_checkpoint_only=True),
    )


# ---- model configs -----------------------------------------------------------------------------


def _shipped_configs() -> dict[str, tuple[str, dict]]:
    """Lookup key (lower case) -> (display name, config) for every config in ops/data."""
    table: dict[str, tuple[str, dict]] = {}
    for entry in resources.files("localseek.ops").joinpath("data").iterdir():
        if not entry.name.endswith(".json"):
            continue
        config = json.loads(entry.read_text(encoding="utf-8"))
        meta = config.get("_localseek", {})
        name = meta.get("name", entry.name[: -len(".json")])
        hf_id = meta.get("hf_id", "")
        keys = {entry.name[: -len(".json")], name, hf_id, hf_id.rsplit("/", 1)[-1]}
        keys.update(meta.get("aliases", []))
        for key in keys:
            if key:
                table[key.lower()] = (name, config)
    return table


def known_models() -> list[str]:
    """Display names of the models whose configs ship with localseek."""
    return sorted({name for name, _ in _shipped_configs().values()})


def load_plan_config(model_or_config: str) -> tuple[str, dict]:
    """(display name, config dict) from a model directory, a config.json path or a known name."""
    path = Path(model_or_config).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise ModelLoadError(f"{model_or_config} has no config.json")
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from exc
        if not isinstance(config, dict):
            raise ModelLoadError(f"{path} must hold a JSON object")
        return str(model_or_config), config
    found = _shipped_configs().get(model_or_config.strip().lower())
    if found is None:
        raise NotFoundError(
            f"unknown model {model_or_config!r}: not a model directory or config.json, and not "
            f"a known model ({', '.join(known_models())})"
        )
    return found


def _architecture(config: Mapping) -> str:
    archs = config.get("architectures") or []
    arch = archs[0] if archs and isinstance(archs[0], str) else None
    supported = (*DENSE_ARCHITECTURES, *MLA_ARCHITECTURES)
    if arch not in supported:
        raise UnsupportedModelError(
            f"cannot plan for architecture {arch!r}; supported: {', '.join(supported)}"
        )
    return arch


def _checkpoint_quant(config: Mapping) -> str:
    quant = config.get("quantization_config") or {}
    if quant.get("quant_method") == "fp8":
        return "fp8"
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    return _CHECKPOINT_QUANT.get(str(dtype), "bf16")


# ---- sizes ----------------------------------------------------------------------------------


def _stored_bytes(groups: list[TensorGroup], quant: str, include_checkpoint_only: bool) -> int:
    """Bytes of the tensors with quantized Linear weights at `quant`, the rest 16-bit (fp32: 32)."""
    other = 4.0 if quant == "fp32" else 2.0
    total = 0.0
    for group in groups:
        if group.checkpoint_only and not include_checkpoint_only:
            continue
        total += group.numel * (QUANT_BYTES[quant] if group.quantized else other)
        if quant == "fp8" and group.quantized:
            rows, cols = group.shape
            total += group.count * math.ceil(rows / FP8_BLOCK) * math.ceil(cols / FP8_BLOCK) * 4
    return math.ceil(total)


def _kv_bytes_per_token(config: Mapping, architecture: str, quant: str) -> tuple[int, int | None]:
    """(cached bytes per token, what a full K/V cache would need for MLA models, else None)."""
    element = 4 if quant == "fp32" else 2
    layers = int(config["num_hidden_layers"])
    if architecture in MLA_ARCHITECTURES:
        latent = int(config["kv_lora_rank"]) + int(config["qk_rope_head_dim"])
        heads = int(config["num_attention_heads"])
        per_head = (
            int(config["qk_nope_head_dim"])
            + int(config["qk_rope_head_dim"])
            + int(config["v_head_dim"])
        )
        return layers * latent * element, layers * heads * per_head * element
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    return layers * 2 * kv_heads * head_dim * element, None


def _layer_windows(config: Mapping, architecture: str) -> tuple[int | None, ...]:
    """Each layer's sliding window in tokens, None for full attention (MLA: none slide)."""
    layers = int(config["num_hidden_layers"])
    if architecture in MLA_ARCHITECTURES:
        return (None,) * layers
    if architecture == "Gemma3ForCausalLM":
        return gemma3_layer_windows(config, layers)
    return layer_windows(config, layers)


def _window_tokens(window: int) -> int:
    """Tokens a window layer holds per sequence while decoding: the blocks a window can span
    plus one (the block manager's bound, tests/engine/test_sliding_window_engine.py)."""
    return (-(-window // KV_BLOCK_TOKENS) + 1) * KV_BLOCK_TOKENS


def _fit(accelerator: Accelerator, total_bytes: int) -> AcceleratorFit:
    usable = int(accelerator.memory_bytes * USABLE_FRACTION)
    count = max(1, math.ceil(total_bytes / usable))
    tensor_parallel = 1 << (count - 1).bit_length()
    return AcceleratorFit(
        name=accelerator.name,
        memory_bytes=accelerator.memory_bytes,
        count=count,
        tensor_parallel=tensor_parallel,
        nodes=math.ceil(tensor_parallel / GPUS_PER_NODE),
    )


# ---- text -----------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _count(n: int) -> str:
    return f"{n / 1e9:,.2f} B" if n >= 1e9 else f"{n / 1e6:,.1f} M"


def _window_lines(p: Plan) -> list[str]:
    if p.sliding_window is None:
        return []
    return [
        f"  sliding window   {p.window_layers} layers attend to {p.sliding_window:,} tokens "
        f"and hold at most {_window_tokens(p.sliding_window):,} per sequence"
    ]


def format_plan(p: Plan) -> str:
    """A human-readable report of `p`: sizes, then one line per accelerator."""
    kv_note = ""
    if p.kv_bytes_per_token_uncompressed:
        ratio = p.kv_bytes_per_token_uncompressed / p.kv_bytes_per_token
        kv_note = (
            f" (MLA latent; a full K/V cache would need "
            f"{_size(p.kv_bytes_per_token_uncompressed)}, {ratio:.0f}x more)"
        )
    active = f" ({_count(p.active_params)} active per token)" if p.active_params < p.params else ""
    lines = [
        f"{p.model} [{p.architecture}], {p.quant} weights, "
        f"{p.concurrency} x {p.context:,} tokens (max context {p.max_context:,})",
        f"  parameters       {_count(p.params)}{active}",
        f"  weights          {_size(p.weight_bytes)}",
        f"  KV per token     {_size(p.kv_bytes_per_token)}{kv_note}",
        *_window_lines(p),
        f"  KV for workload  {_size(p.kv_bytes)}",
        f"  weights + KV     {_size(p.total_bytes)}",
        f"  RAM              {_size(p.ram_bytes)} to serve on CPU (GPU serving needs far less)",
        f"  disk             {_size(p.disk_bytes)} (checkpoint as published)",
        "",
        f"  {'accelerator':<18} {'memory':>10}  {'count':>5}  {'tensor-parallel':>15}  nodes",
    ]
    for fit in p.accelerators:
        lines.append(
            f"  {fit.name:<18} {_size(fit.memory_bytes):>10}  {fit.count:>5}  "
            f"{fit.tensor_parallel:>15}  {fit.nodes:>5}"
        )
    lines.append(
        f"  (each accelerator gives {USABLE_FRACTION:.0%} of its memory to weights + KV; "
        f"nodes of {GPUS_PER_NODE})"
    )
    return "\n".join(lines)
