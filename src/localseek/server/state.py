"""ServerState: what the routes share — engine, admission gate, metrics, model ids — per app."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from localseek.api.load import LoadReport
from localseek.errors import NotFoundError, ServiceUnavailableError
from localseek.ops.metrics.server import LoadSample, ServerMetrics
from localseek.server.admission import AdmissionQueue
from localseek.server.config import ServerConfig
from localseek.server.drain import Drain
from localseek.server.gate import AdmissionGate
from localseek.server.protocol import ModelCard, ModelList
from localseek.server.reasoning import template_has_reasoning

if TYPE_CHECKING:
    from localseek.engine.async_engine import AsyncEngine
    from localseek.engine.embedder import Embedder


def public_model_name(model: str) -> str:
    """`/srv/models/DeepSeek-R1-Distill-Qwen-7B/` -> `DeepSeek-R1-Distill-Qwen-7B`; a Hub id
    (`org/name`) that is not a local path is kept as it is."""
    path = Path(model)
    if path.is_absolute() or path.exists() or model.startswith("."):
        return path.name or model
    return model


class ServerState:
    """Built by the app factory; the engine may be attached later (while it loads, 503)."""

    def __init__(self, config: ServerConfig, engine: AsyncEngine | None = None):
        self.config = config
        self.registry = CollectorRegistry()
        self.metrics = ServerMetrics(self.registry, self.load_sample)
        self.created = int(time.time())
        self._engine: AsyncEngine | None = None
        self.gate: AdmissionGate | None = None
        self.reasoning = False
        self.drain = Drain()
        self.embedder: Embedder | None = None  # set when --embedding-model has loaded
        if engine is not None:
            self.attach(engine)

    def attach(self, engine: AsyncEngine) -> None:
        """Start serving `engine` (sizes admission to its concurrent-sequence limit)."""
        slots = engine.stats().max_num_seqs
        queue = AdmissionQueue(self.config.admission, slots, time.monotonic)
        self.gate = AdmissionGate(queue, self._count_refusal)
        self.reasoning = self.config.enable_reasoning and template_has_reasoning(
            engine.tokenizer.chat_template
        )
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        """The engine, or 503 while it loads or after it died (404 when there is none)."""
        self._require_chat_model()
        engine = self._engine
        if engine is None:
            raise ServiceUnavailableError("the model is still loading; retry shortly")
        if not engine.is_alive():
            raise ServiceUnavailableError("the engine loop is not running")
        return engine

    def _require_chat_model(self) -> None:
        if not self.config.chat_model:
            raise NotFoundError(
                f"this server serves only the embedding model {self.config.embedding_model_name!r}"
                " (--embedding-only): no chat or completions",
                param="model",
            )

    def ready(self) -> bool:
        """Serving and taking new requests: false while loading, draining or after a crash."""
        if self.drain.active:
            return False
        if not self.config.chat_model:
            return self.embedder is not None
        return self._engine is not None and self._engine.is_alive()

    def in_flight(self) -> int:
        """Admitted requests not yet finished: holding engine slots or waiting for them."""
        if self.gate is None:
            return 0
        snap = self.gate.queue.snapshot()
        return snap.slots_used + snap.waiting

    # ---- model ids ------------------------------------------------------------------------

    @property
    def served_model(self) -> str:
        if self.config.served_model_name:
            return self.config.served_model_name
        if self._engine is None:
            return "localseek"
        # The file or directory name, never the path: clients and their logs need no disk layout.
        return public_model_name(self._engine.model_name)

    def model_ids(self) -> list[str]:
        served = self.served_model
        ids = [served]
        for alias, target in self.config.aliases.items():
            if target in ("", served) and alias not in ids:
                ids.append(alias)
        return ids

    def resolve_model(self, requested: str | None) -> str:
        """The id to echo back for a requested model; 404 for one we do not serve."""
        self._require_chat_model()
        if requested is None or requested in self.model_ids():
            return requested or self.served_model
        if self._engine is not None and requested == self._engine.model_name:
            return requested
        raise NotFoundError(
            f"the model {requested!r} does not exist; this server serves "
            f"{', '.join(repr(m) for m in self.model_ids())}",
            param="model",
        )

    def embedder_for(self, requested: str | None) -> Embedder:
        """The embedding model for a request's `model`, or a clear 404 / 503."""
        name = self.config.embedding_model_name
        if name is None:
            raise NotFoundError(
                "this server serves no embedding model; start it with --embedding-model PATH",
                param="model",
            )
        if requested is not None and requested != name:
            raise NotFoundError(
                f"the embedding model {requested!r} does not exist; this server serves {name!r}",
                param="model",
            )
        if self.embedder is None:
            raise ServiceUnavailableError("the embedding model is still loading; retry shortly")
        return self.embedder

    def model_list(self) -> ModelList:
        max_len = self._engine.max_model_len if self._engine is not None else None
        served = self.served_model
        cards = [
            ModelCard(id=m, created=self.created, root=served, max_model_len=max_len)
            for m in (self.model_ids() if self.config.chat_model else [])
        ]
        name = self.config.embedding_model_name
        if name is not None:
            cards.append(ModelCard(id=name, created=self.created, root=name))
        return ModelList(data=cards)

    def model_card(self, model_id: str) -> ModelCard:
        """GET /v1/models/{id}: the card, or a 404 naming the ids served."""
        cards = self.model_list().data
        for card in cards:
            if card.id == model_id:
                return card
        raise NotFoundError(
            f"the model {model_id!r} does not exist; this server serves "
            f"{', '.join(repr(c.id) for c in cards)}",
            param="model",
        )

    # ---- load -----------------------------------------------------------------------------

    def load_report(self) -> LoadReport:
        engine = self.engine
        stats = engine.stats()
        assert self.gate is not None  # set together with the engine
        snap = self.gate.queue.snapshot()
        return LoadReport(
            model=self.served_model,
            running=snap.slots_used,
            waiting=snap.waiting,
            queued=snap.slots_used + snap.waiting,
            capacity=snap.total_slots,
            max_queue=self.config.max_queue,
            queued_tokens=snap.queued_tokens,
            kv_usage=stats.kv_usage,
            estimated_wait_s=round(snap.estimated_wait_s, 3),
            generation_tokens_per_s=round(stats.generation_tokens_per_s, 3),
            drain_tokens_per_s=None if snap.drain_rate is None else round(snap.drain_rate, 3),
        )

    def load_sample(self) -> LoadSample | None:
        engine, gate = self._engine, self.gate
        if engine is None or gate is None:
            return None
        stats = engine.stats()
        snap = gate.queue.snapshot()
        return LoadSample(
            num_running=stats.num_running,
            num_waiting=stats.num_waiting + snap.waiting,
            queued_tokens=snap.queued_tokens,
            kv_usage=stats.kv_usage,
            estimated_wait_s=snap.estimated_wait_s,
            generation_tokens_per_s=stats.generation_tokens_per_s,
            prefix_cache_queries=stats.prefix_cache_queries,
            prefix_cache_hits=stats.prefix_cache_hits,
            prompt_tokens=stats.prompt_tokens_total,
            generation_tokens=stats.generation_tokens_total,
            preemptions=stats.num_preemptions_total,
        )

    def _count_refusal(self, reason: str) -> None:
        self.metrics.requests_refused.labels(reason).inc()
