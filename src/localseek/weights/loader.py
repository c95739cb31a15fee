"""open_model: a local HF directory, a .gguf file, or a Hugging Face Hub id -> ModelSource."""

from __future__ import annotations

import re
from pathlib import Path

from localseek.errors import ModelLoadError
from localseek.weights.hf import open_hf_dir
from localseek.weights.source import ModelSource

# What snapshot_download fetches: configs, safetensors weights, tokenizer files, templates.
HUB_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt")
# "org/name" or "name": letters, digits, '-', '_', '.'; no leading '.' (that is a path).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def open_model(path_or_id: str | Path) -> ModelSource:
    """Open a model from a directory, a .gguf file or a Hub id (downloaded on first use)."""
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return open_hf_dir(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            from localseek.weights.gguf import open_gguf

            return open_gguf(path)
        raise ModelLoadError(
            f"{text} is a file but not a .gguf; pass a .gguf file or a Hugging Face model "
            "directory (config.json + *.safetensors)"
        )
    if _looks_local(text):
        raise ModelLoadError(f"no such file or directory: {text}")
    return open_hf_dir(download_from_hub(text))


def _looks_local(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or text.lower().endswith((".gguf", ".safetensors"))
        or not _HUB_ID.match(text)
    )


def download_from_hub(repo_id: str) -> Path:
    """The local snapshot of a Hub repository (from the HF cache when offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_PATTERNS)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not download {repo_id} from the Hugging Face Hub: {exc}; "
            "pass a local directory or .gguf file"
        ) from exc
