"""POST /v1/embeddings: texts or token ids -> vectors from the embedding model, OpenAI's shape."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from localseek.engine.embedder import Embedder
from localseek.errors import InvalidRequestError
from localseek.server.api_fields import EMBEDDING_FIELDS
from localseek.server.protocol import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from localseek.server.state import ServerState


def _inputs(embedder: Embedder, raw: object) -> list[list[int]]:
    """Every accepted input shape as token-id lists (runs in a worker thread)."""
    if isinstance(raw, str):
        return embedder.tokenize([raw])
    items = list(raw)  # type: ignore[call-overload]
    if all(isinstance(t, int) for t in items):
        return [items]
    if all(isinstance(t, str) for t in items):
        return embedder.tokenize(items)
    return [list(ids) for ids in items]


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _embed(embedder: Embedder, body: EmbeddingRequest) -> tuple[np.ndarray, int]:
    ids = _inputs(embedder, body.input)
    vectors = embedder.embed_ids(ids).numpy()  # [N, H]
    return vectors, sum(min(len(t), embedder.max_tokens) for t in ids)


class EmbeddingService:
    def __init__(self, state: ServerState):
        self.state = state

    async def create(self, body: EmbeddingRequest) -> EmbeddingResponse:
        EMBEDDING_FIELDS.check(body.model_extra)
        embedder = self.state.embedder_for(body.model)
        if body.dimensions is not None and body.dimensions != embedder.dimensions:
            raise InvalidRequestError(
                f"dimensions={body.dimensions}: {embedder.name} gives {embedder.dimensions}-"
                "dimensional embeddings and cannot be shortened",
                param="dimensions",
            )
        vectors, tokens = await asyncio.to_thread(_embed, embedder, body)
        data = [
            Embedding(index=i, embedding=_encode(v, body.encoding_format))
            for i, v in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data,
            model=body.model or embedder.name,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
