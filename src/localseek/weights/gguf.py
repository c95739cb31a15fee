"""open_gguf: a .gguf file (llama.cpp / Ollama format) as a ModelSource.

Everything that can be wrong with a file (not GGUF, truncated, unknown architecture, a
quantization type localseek cannot dequantize, unknown tensors) is found from the header
alone, before the model allocates memory. Tensors are dequantized one at a time, when the
model's load_weights pulls them, from a memory-mapped file.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from localseek.errors import ModelLoadError
from localseek.weights.gguf_config import architecture, build_config
from localseek.weights.gguf_file import GGUFFile
from localseek.weights.gguf_tensors import check_tensors, iter_hf_tensors, layout_fix
from localseek.weights.gguf_tokenizer import tokenizer_from_gguf
from localseek.weights.source import ModelSource

logger = logging.getLogger(__name__)


def open_gguf(path: str | Path) -> ModelSource:
    """Read a GGUF file's header, config and tokenizer; weights stay on disk until iterated."""
    gguf = GGUFFile(path)
    arch = architecture(gguf)
    check_tensors(gguf, arch)
    config = build_config(gguf)
    fix = layout_fix(arch, config)
    tokenizer = tokenizer_from_gguf(gguf, arch)
    _check_vocabulary_fits(gguf, config)
    types = Counter(t.type_name for t in gguf.tensors)
    logger.info(
        "GGUF %s: %s, %d tensors (%s)",
        gguf.path,
        arch,
        len(gguf.tensors),
        ", ".join(f"{n} {name}" for name, n in types.most_common()),
    )
    num_weights = sum(1 for t in gguf.tensors if t.name != "rope_freqs.weight")

    def weights(keep_packed: frozenset[int]):
        return iter_hf_tensors(gguf, arch, fix, keep_packed)

    return ModelSource(
        config=config,
        tokenizer=tokenizer,
        num_tensors=num_weights,
        weight_iter=weights,
        path=gguf.path,
        format="gguf",
        extra={
            "gguf_architecture": arch,
            "tensor_types": dict(types),
            "file_type": gguf.metadata.get("general.file_type"),
            "name": gguf.metadata.get("general.name"),
        },
    )


def _check_vocabulary_fits(gguf: GGUFFile, config: dict) -> None:
    """A tokenizer with more tokens than the embedding has rows would let a prompt index past
    the table; llama.cpp refuses such a file, and so does this loader."""
    tokens = len(gguf.metadata.get("tokenizer.ggml.tokens") or ())
    rows = int(config["vocab_size"])
    if tokens > rows:
        raise ModelLoadError(
            f"GGUF file {gguf.path}: the tokenizer lists {tokens} tokens but token_embd.weight "
            f"has {rows} rows, so token ids {rows}..{tokens - 1} have no embedding; the file is "
            "inconsistent (re-convert it, or use a file whose vocabulary matches its weights)"
        )
