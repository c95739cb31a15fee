"""Embedder: a sentence-transformers style embedding model (BERT + pooling + normalize), batched.

Loads a directory laid out as sentence-transformers saves one (config.json, model.safetensors,
tokenizer.json, modules.json, 1_Pooling/config.json, sentence_bert_config.json) or a plain HF
BERT directory (mean pooling, normalized). Inputs are sorted by length and encoded in batches
padded to their longest member, so a request of many short texts costs little padding.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer as HFTokenizer

from localseek.errors import InvalidRequestError, ModelLoadError
from localseek.models.bert import BertEncoder, mean_pool

_BATCH = 32  # inputs per forward pass


def _read_json(path: Path, default: dict) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


class Embedder:
    """Texts or token ids -> unit-length (when the model normalizes) float32 vectors."""

    def __init__(self, path: str | Path, *, device: str = "cpu"):
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
            raise ModelLoadError(
                f"{path} is not an embedding model directory (config.json and tokenizer.json)"
            )
        config = _read_json(path / "config.json", {})
        if config.get("model_type") != "bert":
            raise ModelLoadError(
                f"embedding model type {config.get('model_type')!r} is not supported (bert only)"
            )
        self.name = path.name
        self.model = BertEncoder(config).eval().to(device)
        state = load_file(str(path / "model.safetensors"), device=device)
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        missing, _ = self.model.load_state_dict(state, strict=False)
        if missing:
            raise ModelLoadError(f"embedding model {path} lacks weights: {missing[:3]}")
        pooling = _read_json(path / "1_Pooling" / "config.json", {"pooling_mode_mean_tokens": True})
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ModelLoadError("only mean pooling is supported for embedding models")
        modules = _read_json(path / "modules.json", {}) or []
        self.normalize = not modules or any(
            m.get("type", "").endswith("Normalize") for m in modules
        )
        st_config = _read_json(path / "sentence_bert_config.json", {})
        self.max_tokens = min(st_config.get("max_seq_length", 512), self.model.max_positions)
        self.tokenizer = HFTokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        self.dimensions = self.model.hidden_size
        self.vocab_size = config["vocab_size"]
        self._device = device
        self._lock = threading.Lock()  # one forward at a time: requests share the CPU threads

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids with [CLS]/[SEP], truncated to the model's max_seq_length."""
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def embed_ids(self, inputs: list[list[int]]) -> torch.Tensor:
        """[N, H] float32 embeddings of token-id inputs (each truncated to max_tokens)."""
        for i, ids in enumerate(inputs):
            if not ids:
                raise InvalidRequestError(f"input {i} is empty", param="input")
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"input {i}: token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})",
                    param="input",
                )
        inputs = [ids[: self.max_tokens] for ids in inputs]
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        out = torch.empty(len(inputs), self.dimensions)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), _BATCH):
                chunk = order[start : start + _BATCH]
                out[chunk] = self._forward([inputs[i] for i in chunk])
        return out

    def _forward(self, batch: list[list[int]]) -> torch.Tensor:
        width = max(len(ids) for ids in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)  # [B, L], 0 = [PAD]
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        pooled = mean_pool(self.model(ids, mask), mask)  # [B, H]
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().cpu()
