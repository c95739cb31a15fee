"""The gateway's frozen configuration, parsed once from YAML; unknown keys are errors naming the field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localseek.errors import ConfigError
from localseek.gateway.config_parse import build_dataclass, load_config_file
from localseek.gateway.detectors import DETECTORS
from localseek.gateway.server_kinds import SERVER_KINDS
from localseek.gateway.versions import PublicModelConfig, check_served

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CONTINUATIONS = ("continue_final_message", "prefix", "none")


@dataclass(frozen=True)
class UpstreamConfig:
    """One OpenAI-compatible upstream: a localseek engine, vLLM, SGLang, Ollama or a cloud API."""

    name: str
    url: str  # OpenAI base URL, including /v1 (the gateway posts to {url}/chat/completions)
    weight: int = 1  # share of traffic among the primaries of its tier
    backup: bool = False  # used only when every primary is down or saturated (nginx `backup`)
    kind: str = "local"  # local | cloud; cloud upstreams take only cloud-eligible requests
    # What answers there: localseek | vllm | llama_cpp | ollama | openai; decides the health
    # path and how load is read (server_kinds.py).
    server: str = "localseek"
    api_key_env: str | None = None  # environment variable holding the upstream's key
    max_concurrency: int = 64  # requests in flight at once before the upstream counts as full
    models: tuple[str, ...] = ()  # model ids served; empty: any model
    model_map: dict[str, str] = field(default_factory=dict)  # public id -> upstream's id
    price_input_per_mtok: float = 0.0  # USD per million input tokens (cloud)
    price_output_per_mtok: float = 0.0  # USD per million output tokens (cloud)
    probe: bool | None = None  # active /health probes; None: on for local, off for cloud
    health_url: str | None = None  # None: {scheme}://{host} + the server kind's health path
    load_url: str | None = None  # None: {scheme}://{host} + the server kind's load path
    # How to ask this upstream to continue a partial answer after another one died mid-stream:
    # continue_final_message (vLLM, SGLang, localseek), prefix (DeepSeek's chat prefix), none.
    continuation: str = "continue_final_message"
    # Ask for vLLM's stream_options.continuous_usage_stats (usage in every chunk), so that a
    # continuation's budget is cut by the tokens sent, not the chunks. None: on for local only
    # (some cloud APIs reject stream_options keys they do not know).
    continuous_usage: bool | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"name must match {_NAME_RE.pattern}, got {self.name!r}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"url must be an http(s) URL, got {self.url!r}", param="url")
        if self.weight < 1:
            raise ConfigError(f"weight must be >= 1, got {self.weight}", param="weight")
        if self.server not in SERVER_KINDS:
            raise ConfigError(
                f"server must be one of {sorted(SERVER_KINDS)}, got {self.server!r}", param="server"
            )
        if self.kind not in ("local", "cloud"):
            raise ConfigError(f"kind must be local or cloud, got {self.kind!r}", param="kind")
        if self.max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.continuation not in _CONTINUATIONS:
            raise ConfigError(
                f"continuation must be one of {_CONTINUATIONS}, got {self.continuation!r}"
            )
        if self.price_input_per_mtok < 0 or self.price_output_per_mtok < 0:
            raise ConfigError("prices must be >= 0")

    @property
    def root_url(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def probes(self) -> bool:
        return self.kind == "local" if self.probe is None else self.probe

    @property
    def asks_continuous_usage(self) -> bool:
        return self.kind == "local" if self.continuous_usage is None else self.continuous_usage

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    def serves(self, model: str) -> bool:
        return not self.models or model in self.models or model in self.model_map


@dataclass(frozen=True)
class HealthConfig:
    """Active probes and the per-upstream circuit breaker."""

    interval_s: float = 5.0  # between active probes of /health and /load
    probe_timeout_s: float = 2.0
    failure_threshold: int = 2  # consecutive failures that open the circuit
    backoff_initial_s: float = 1.0  # first open period; doubles per consecutive opening
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("interval_s", "probe_timeout_s", "backoff_initial_s", "backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.failure_threshold < 1:
            raise ConfigError(f"failure_threshold must be >= 1, got {self.failure_threshold}")


@dataclass(frozen=True)
class BalancerConfig:
    """How a replica is chosen among the healthy ones."""

    strategy: str = "least_load"  # least_load | round_robin (weighted, smooth)
    affinity: str = "none"  # none | user | prefix | user_or_prefix
    affinity_min_prefix_chars: int = 256  # prompts shorter than this have no prefix affinity
    affinity_max_entries: int = 10_000  # LRU bound of the affinity index

    def __post_init__(self) -> None:
        if self.strategy not in ("least_load", "round_robin"):
            raise ConfigError(f"strategy must be least_load or round_robin, got {self.strategy!r}")
        if self.affinity not in ("none", "user", "prefix", "user_or_prefix"):
            raise ConfigError(
                f"affinity must be none, user, prefix or user_or_prefix, got {self.affinity!r}"
            )
        if self.affinity_max_entries < 1 or self.affinity_min_prefix_chars < 1:
            raise ConfigError("affinity_max_entries and affinity_min_prefix_chars must be >= 1")


@dataclass(frozen=True)
class DispatchConfig:
    """The bounded wait for a local slot, and overflow to the cloud."""

    max_queue: int = 256  # requests waiting for a slot; beyond it: 429 at once
    max_queue_wait_s: float = 10.0  # longest wait for a local slot before 429
    request_timeout_s: float = 300.0  # whole-request deadline, retries and failover included
    connect_timeout_s: float = 3.0
    overflow: bool = True  # cloud-eligible requests may go to cloud upstreams when local is full
    overflow_after_s: float = 0.0  # how long a cloud-eligible request waits for local first
    max_attempts: int = 4  # upstreams tried per request (pre-first-byte retries + continuations)

    def __post_init__(self) -> None:
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.max_queue_wait_s < 0 or self.overflow_after_s < 0:
            raise ConfigError("max_queue_wait_s and overflow_after_s must be >= 0")
        if self.request_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("request_timeout_s and connect_timeout_s must be > 0")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")


@dataclass(frozen=True)
class PolicyConfig:
    """What makes a request local-only."""

    detectors: tuple[str, ...] = ("prc_id", "cn_mobile", "bank_card", "email")
    patterns: tuple[str, ...] = ()  # extra regexes; a match makes the request local-only
    keywords: tuple[str, ...] = ()  # case-insensitive substrings, same effect
    default_local_only: bool = False  # true: nothing goes to the cloud unless marked public

    def __post_init__(self) -> None:
        for name in self.detectors:
            if name not in DETECTORS:
                raise ConfigError(f"unknown detector {name!r}; known: {sorted(DETECTORS)}")
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"pattern {pattern!r} is not a valid regex: {exc}") from exc


@dataclass(frozen=True)
class ResponseCacheConfig:
    """The response cache."""

    enabled: bool = True
    backend: str = "memory"  # memory | redis
    redis_url: str | None = None  # None: the top-level redis_url
    ttl_s: float = 600.0
    max_bytes: int = 64 << 20  # memory backend budget; LRU eviction beyond it
    cache_nondeterministic: bool = False  # also cache requests without temperature 0 or a seed
    namespace: str = "v1"  # bump to invalidate every entry (e.g. after a model update)

    def __post_init__(self) -> None:
        if self.backend not in ("memory", "redis"):
            raise ConfigError(f"backend must be memory or redis, got {self.backend!r}")
        if self.ttl_s <= 0 or self.max_bytes < 1:
            raise ConfigError("ttl_s must be > 0 and max_bytes >= 1")


@dataclass(frozen=True)
class LimitsConfig:
    """Where per-tenant token buckets live."""

    backend: str = "memory"  # memory | redis (shared by every gateway replica)
    redis_url: str | None = None  # None: the top-level redis_url
    default_max_tokens: int = 256  # output tokens assumed at admission when max_tokens is absent
    # While Redis is unreachable: allow (no limit), deny (503), local (per-process buckets).
    on_redis_error: str = "local"

    def __post_init__(self) -> None:
        if self.backend not in ("memory", "redis"):
            raise ConfigError(f"backend must be memory or redis, got {self.backend!r}")
        if self.on_redis_error not in ("allow", "deny", "local"):
            raise ConfigError(
                f"on_redis_error must be allow, deny or local, got {self.on_redis_error!r}"
            )


@dataclass(frozen=True)
class UsageConfig:
    """The usage ledger `localseek usage` reports from."""

    path: str | None = None  # SQLite file, one row per request; None: no ledger


@dataclass(frozen=True)
class TenantConfig:
    """A tenant: its API keys, its limits and whether its data may leave the machine."""

    name: str
    api_keys: tuple[str, ...] = ()  # literal keys (prefer api_key_envs in production)
    api_key_envs: tuple[str, ...] = ()  # environment variables holding keys
    local_only: bool = False
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    priority: int = 0  # lower is served first from the admission queue

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"name must match {_NAME_RE.pattern}, got {self.name!r}")
        for limit in (self.requests_per_minute, self.tokens_per_minute):
            if limit is not None and limit < 1:
                raise ConfigError(f"per-minute limits must be >= 1, got {limit}")


@dataclass(frozen=True)
class AdminConfig:
    """Who may call /admin/* (version weights, promote, rollback, reload); no keys: disabled."""

    api_keys: tuple[str, ...] = ()  # literal keys (prefer api_key_envs in production)
    api_key_envs: tuple[str, ...] = ()  # environment variables holding keys


@dataclass(frozen=True)
class GatewayConfig:
    """Everything `localseek gateway` needs."""

    upstreams: tuple[UpstreamConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None  # shared by cache and limits unless they name their own
    max_body_bytes: int = 4 << 20  # larger request bodies get 413 while being read (as serve's)
    health: HealthConfig = HealthConfig()
    balancer: BalancerConfig = BalancerConfig()
    admission: DispatchConfig = DispatchConfig()
    policy: PolicyConfig = PolicyConfig()
    cache: ResponseCacheConfig = ResponseCacheConfig()
    limits: LimitsConfig = LimitsConfig()
    usage: UsageConfig = UsageConfig()
    tenants: tuple[TenantConfig, ...] = ()  # empty: no API keys, one anonymous tenant
    models: tuple[PublicModelConfig, ...] = ()  # public names -> weighted versions (versions.py)
    admin: AdminConfig = AdminConfig()

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ConfigError("at least one upstream is required", param="upstreams")
        _unique([u.name for u in self.upstreams], "upstreams")
        _unique([t.name for t in self.tenants], "tenants")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if not any(u.kind == "local" for u in self.upstreams):
            raise ConfigError("at least one upstream must have kind: local", param="upstreams")
        check_served(self.models, lambda m: any(u.serves(m) for u in self.upstreams))
        for part, name in ((self.cache, "cache"), (self.limits, "limits")):
            if part.backend == "redis" and not (part.redis_url or self.redis_url):
                raise ConfigError(f"{name}.backend is redis but no redis_url is set")

    def redis_url_for(self, part: ResponseCacheConfig | LimitsConfig) -> str | None:
        return part.redis_url or self.redis_url


def _unique(names: list[str], where: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{where}: name {name!r} is used twice", param=where)
        seen.add(name)


def parse_gateway_config(data: Any) -> GatewayConfig:
    """A GatewayConfig from parsed YAML; errors name the field path (upstreams[1].weight)."""
    return build_dataclass(GatewayConfig, data, "")


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway.yaml."""
    return load_config_file(GatewayConfig, path, "gateway config")
