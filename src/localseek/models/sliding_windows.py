"""Which layers attend through a sliding window, read from an HF config (no torch).

Shared by the model classes, which build their KV layout from it, and by `localseek plan`,
which sizes the KV cache with it.
"""

from __future__ import annotations

from collections.abc import Mapping

SLIDING, FULL = "sliding_attention", "full_attention"
_GEMMA3_PATTERN = 6  # older Gemma 3 configs: every 6th layer is global
_GEMMA3_WINDOW = 4096  # Gemma3TextConfig's default sliding_window


def layer_windows(cfg: Mapping, num_layers: int) -> tuple[int | None, ...]:
    """Llama / Qwen2 / Mistral: each layer's window in tokens, None for full attention."""
    window = cfg.get("sliding_window")
    if window is None or cfg.get("use_sliding_window") is False:
        return (None,) * num_layers
    window = int(window)
    if cfg.get("layer_types"):
        return tuple(window if t == SLIDING else None for t in cfg["layer_types"])
    if "max_window_layers" in cfg:  # Qwen2: only the layers from max_window_layers on slide
        first = int(cfg["max_window_layers"])
        return tuple(window if i >= first else None for i in range(num_layers))
    return (window,) * num_layers  # Mistral: every layer


def gemma3_layer_types(cfg: Mapping, num_layers: int) -> tuple[str, ...]:
    """Gemma 3: `layer_types` as listed, or from the older `sliding_window_pattern`."""
    if cfg.get("layer_types"):
        return tuple(cfg["layer_types"])
    period = int(cfg.get("sliding_window_pattern") or _GEMMA3_PATTERN)
    return tuple(FULL if (i + 1) % period == 0 else SLIDING for i in range(num_layers))


def gemma3_window(cfg: Mapping) -> int:
    return int(cfg.get("sliding_window") or _GEMMA3_WINDOW)


def gemma3_layer_windows(cfg: Mapping, num_layers: int) -> tuple[int | None, ...]:
    window = gemma3_window(cfg)
    return tuple(window if t == SLIDING else None for t in gemma3_layer_types(cfg, num_layers))
