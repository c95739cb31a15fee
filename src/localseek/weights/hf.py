"""HF model directories: config.json, (sharded) *.safetensors weights, tokenizer files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from localseek.errors import ModelLoadError
from localseek.weights.source import ModelSource

_INDEX = "model.safetensors.index.json"


def open_hf_dir(directory: str | Path) -> ModelSource:
    """A ModelSource over an HF directory: config, tokenizer and memory-mapped weights."""
    from localseek.weights.tokenizer import Tokenizer

    directory = Path(directory)
    config = read_hf_config(directory)
    weights = HFWeights(safetensors_files(directory))
    return ModelSource(
        config=config,
        tokenizer=Tokenizer.from_pretrained_dir(directory),
        num_tensors=weights.num_tensors,
        weight_iter=lambda _keep_packed: iter(weights),
        path=str(directory),
        format="hf",
    )


def read_hf_config(directory: Path) -> dict:
    """config.json as a dict; a clear error when it is absent or not a JSON object."""
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{directory} has no config.json; pass a Hugging Face model directory "
            "(config.json + *.safetensors + tokenizer files) or a .gguf file"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def safetensors_files(directory: Path) -> list[Path]:
    """The weight files: the index's shards, model.safetensors, or every *.safetensors."""
    index = directory / _INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"cannot read the weight index {index}: {exc}") from exc
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(
                f"{index} lists shard(s) missing from {directory}: {', '.join(missing)}"
            )
        return files
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise ModelLoadError(
            f"{directory} has only PyTorch pickle weights (*.bin/*.pt); localseek reads "
            "*.safetensors (convert them, or use a repository that ships safetensors)"
        )
    raise ModelLoadError(f"{directory} has no *.safetensors weight files")


class HFWeights:
    """(name, tensor) pairs from safetensors files, one tensor in memory at a time."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.num_tensors = sum(len(self._keys(f)) for f in files)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for path in self.files:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    for name in handle.keys():
                        yield name, handle.get_tensor(name)
            except (OSError, SafetensorError) as exc:
                raise ModelLoadError(f"cannot read weights from {path}: {exc}") from exc

    @staticmethod
    def _keys(path: Path) -> list[str]:
        # Reads only the header, not the tensors.
        try:
            with safe_open(str(path), framework="pt") as handle:
                return list(handle.keys())
        except (OSError, SafetensorError) as exc:
            raise ModelLoadError(f"cannot read weights from {path}: {exc}") from exc
