"""HF architecture name -> model class, imported lazily so optional model files may be absent."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from localseek.errors import ModelLoadError, UnsupportedModelError

# architectures[0] in config.json -> "module:Class". Modules import only when their model is
# loaded, so a missing or broken model file affects only that architecture.
_ARCHITECTURES: Mapping[str, str] = {
    "LlamaForCausalLM": "localseek.models.llama:LlamaForCausalLM",
    "Qwen2ForCausalLM": "localseek.models.llama:Qwen2ForCausalLM",
    "MistralForCausalLM": "localseek.models.llama:MistralForCausalLM",
    "DeepseekV2ForCausalLM": "localseek.models.deepseek:DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM": "localseek.models.deepseek:DeepseekV3ForCausalLM",
    "Gemma3ForCausalLM": "localseek.models.gemma3:Gemma3ForCausalLM",
    "Gemma3ForConditionalGeneration": "localseek.models.gemma3:Gemma3ForConditionalGeneration",
}


def supported_architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def architecture_of(hf_config: Mapping) -> str:
    """The config's architectures[0], or an error naming what is there instead."""
    archs = hf_config.get("architectures")
    if not archs or not isinstance(archs, list) or not isinstance(archs[0], str):
        raise UnsupportedModelError(
            f"model config has no usable 'architectures' entry (got {archs!r}); "
            f"supported: {', '.join(supported_architectures())}"
        )
    return archs[0]


def resolve_model_class(hf_config: Mapping) -> type:
    """The model class implementing the config's architecture."""
    arch = architecture_of(hf_config)
    target = _ARCHITECTURES.get(arch)
    if target is None:
        raise UnsupportedModelError(
            f"unsupported model architecture {arch!r}; "
            f"supported: {', '.join(supported_architectures())}"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"architecture {arch!r} is implemented in {module_name}, which failed to import: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelLoadError(f"architecture {arch!r}: {module_name} defines no {class_name}")
    return cls
