"""ServerConfig: the HTTP server's settings (limits, admission, aliases), frozen and validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from localseek.errors import ConfigError


def _default_aliases() -> dict[str, str]:
    # "" means "whatever the served model is": DeepSeek API code keeps its model ids unchanged.
    return {"deepseek-chat": "", "deepseek-reasoner": ""}


@dataclass(frozen=True)
class AdmissionConfig:
    """Limits of the server's waiting queue; the part of ServerConfig admission control reads."""

    max_queue: int = 256  # requests waiting for an engine slot, at most
    # Waiting work in tokens (prompt + expected output, times n), at most. R1 answers spend
    # thousands of tokens reasoning, so the queue is sized on output too, not only on count.
    max_queued_tokens: int = 1 << 20
    default_request_timeout: float = 60.0  # seconds a request may wait to *start*
    max_request_timeout: float = 3600.0  # largest X-Request-Timeout accepted
    # Completions remembered by the drain-rate meter (more: steadier, slower to react).
    drain_window: int = 32
    min_retry_after: float = 1.0  # Retry-After never below this (seconds)

    def __post_init__(self) -> None:
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.max_queued_tokens < 0:
            raise ConfigError(f"max_queued_tokens must be >= 0, got {self.max_queued_tokens}")
        if not 0 < self.default_request_timeout <= self.max_request_timeout:
            raise ConfigError(
                f"default_request_timeout must be in (0, max_request_timeout="
                f"{self.max_request_timeout}], got {self.default_request_timeout}"
            )
        if self.drain_window < 1:
            raise ConfigError(f"drain_window must be >= 1, got {self.drain_window}")


@dataclass(frozen=True)
class ServerConfig:
    """Everything `localseek serve` needs besides the engine config."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None  # when set, /v1 and /beta routes require `Bearer <api_key>`
    served_model_name: str | None = None  # None: the path/id the model was loaded from
    # Extra model ids accepted for the served model ("" maps to the served model).
    aliases: Mapping[str, str] = field(default_factory=_default_aliases)
    max_queue: int = 256  # requests waiting for an engine slot, at most
    max_queued_tokens: int = 1 << 20  # waiting prompt + expected output tokens, at most
    default_request_timeout: float = 60.0  # seconds a request may wait to start
    max_request_timeout: float = 3600.0  # largest X-Request-Timeout accepted
    max_n: int = 8  # largest `n` (choices per request)
    max_tokens_limit: int | None = None  # largest `max_tokens` accepted; None: the context
    # Chat output limit when a request sets none (hosted APIs have one too: without it an
    # answer that never emits EOS runs to the context). None: up to the context.
    default_max_tokens: int | None = 4096
    max_body_bytes: int = 4 << 20  # larger request bodies get 413
    enable_reasoning: bool = True  # split <think>…</think> into reasoning_content
    embedding_model: str | None = None  # directory of an embedding model for /v1/embeddings
    chat_model: bool = True  # False: serve only the embedding model (--embedding-only)
    log_level: str = "info"
    # After SIGTERM: seconds admitted requests get to finish before the process exits anyway.
    # An orchestrator's grace period must be longer (`localseek deploy k8s` adds a margin).
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if self.api_key is not None and not self.api_key:
            raise ConfigError("api_key must not be empty; leave it unset to disable auth")
        if self.max_n < 1:
            raise ConfigError(f"max_n must be >= 1, got {self.max_n}")
        for name in ("max_tokens_limit", "default_max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.drain_timeout_s < 0:
            raise ConfigError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if not self.chat_model and self.embedding_model is None:
            raise ConfigError("serving no chat model needs an embedding model (--embedding-model)")
        _ = self.admission  # validates the admission fields, naming the bad one
        # A read-only copy: a frozen dataclass holding the caller's mutable dict is not frozen.
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))
        for alias, target in self.aliases.items():
            if not alias:
                raise ConfigError(
                    f"model alias names must be non-empty, got {alias!r} -> {target!r}"
                )

    @property
    def embedding_model_name(self) -> str | None:
        """The id clients use for the embedding model: its directory's name."""
        if self.embedding_model is None:
            return None
        return self.embedding_model.rstrip("/").rsplit("/", 1)[-1] or self.embedding_model

    @property
    def admission(self) -> AdmissionConfig:
        """The part admission control reads."""
        return AdmissionConfig(
            max_queue=self.max_queue,
            max_queued_tokens=self.max_queued_tokens,
            default_request_timeout=self.default_request_timeout,
            max_request_timeout=self.max_request_timeout,
        )
