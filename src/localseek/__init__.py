"""localseek: a self-hosted serving stack for DeepSeek-family models.

The public names are imported lazily so that `import localseek.gateway` (a light process that
only speaks HTTP) never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["LLM", "SamplingParams", "AsyncEngine", "__version__"]

_LAZY = {
    "LLM": ("localseek.engine.llm", "LLM"),
    "SamplingParams": ("localseek.sampling_params", "SamplingParams"),
    "AsyncEngine": ("localseek.engine.async_engine", "AsyncEngine"),
}

if TYPE_CHECKING:
    from localseek.engine.async_engine import AsyncEngine
    from localseek.engine.llm import LLM
    from localseek.sampling_params import SamplingParams


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'localseek' has no attribute {name!r}")
