"""LoadReport: the body of `GET /load`, sent by `localseek serve` and read by the gateway.

One schema in a torch-free module both import, so the two sides cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError


class LoadReport(BaseModel):
    """What a gateway routes on."""

    model: str
    running: int = Field(ge=0)  # engine sequences running (server-side view, n counted)
    waiting: int = Field(ge=0)  # requests waiting in the server's admission queue
    queued: int = Field(ge=0)  # running + waiting: the gateway's "load"
    capacity: int = Field(ge=1)  # sequences the engine runs at once (max_num_seqs)
    max_queue: int = Field(ge=0)
    queued_tokens: int = Field(ge=0)
    kv_usage: float  # fraction of KV blocks held
    estimated_wait_s: float  # for a new priority-0 request
    generation_tokens_per_s: float  # recent decode throughput
    drain_tokens_per_s: float | None  # measured admission drain rate (declared-cost units)

    @classmethod
    def read(cls, data: Any) -> LoadReport | None:
        """The report in a /load body, or None if the body is not one (never raises)."""
        try:
            return cls.model_validate(data)
        except ValidationError:
            return None
