"""The gateway's Prometheus metrics, created on a registry the app owns (never at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """Every metric the gateway exports. Labels are bounded: upstream and tenant names come from
    the config, reasons and outcomes from fixed sets; never prompts or user ids."""

    def __init__(self, registry: CollectorRegistry):
        p = "localseek_gateway_"
        self.requests = Counter(
            p + "requests_total",
            "Client requests by route and HTTP status.",
            ["route", "status"],
            registry=registry,
        )
        self.upstream_requests = Counter(
            p + "upstream_requests_total",
            "Requests sent to each upstream, by outcome.",
            ["upstream", "outcome"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            p + "upstream_errors_total",
            "Upstream failures by kind (connect, timeout, status_5xx, status_429, stream_cut).",
            ["upstream", "kind"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            p + "upstream_latency_seconds",
            "Time from sending to an upstream to its last byte.",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.circuit_state = Gauge(
            p + "upstream_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["upstream"],
            registry=registry,
        )
        self.in_flight = Gauge(
            p + "upstream_in_flight",
            "Requests this gateway has in flight on each upstream.",
            ["upstream"],
            registry=registry,
        )
        self.cache_hits = Counter(p + "cache_hits_total", "Response cache hits.", registry=registry)
        self.cache_misses = Counter(
            p + "cache_misses_total",
            "Cacheable requests not found in the cache.",
            registry=registry,
        )
        self.cache_stored_bytes = Counter(
            p + "cache_stored_bytes_total",
            "Bytes written to the response cache.",
            registry=registry,
        )
        self.cache_bytes = Gauge(
            p + "cache_bytes", "Bytes held by the in-memory response cache.", registry=registry
        )
        self.overflowed = Counter(
            p + "overflowed_total",
            "Requests sent to a cloud upstream because local was full or down.",
            ["tenant"],
            registry=registry,
        )
        self.overflow_reasons = Counter(
            p + "overflow_reasons_total",
            "Requests sent to a cloud upstream, by why: local_full (local upstreams up but "
            "saturated) or local_down (every local upstream's circuit open).",
            ["reason"],
            registry=registry,
        )
        self.shed = Counter(
            p + "shed_total",
            "Requests refused with 429 (queue_full, queue_timeout, rate_limit).",
            ["tenant", "reason"],
            registry=registry,
        )
        self.local_only = Counter(
            p + "local_only_total",
            "Requests kept local by the data policy, by reason.",
            ["reason"],
            registry=registry,
        )
        self.local_only_refused = Counter(
            p + "local_only_refused_total",
            "Local-only (sensitive) requests refused because no local upstream could take them, "
            "by reason: overloaded (429), unavailable (5xx).",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            p + "queue_depth", "Requests waiting for a local slot.", registry=registry
        )
        self.affinity_entries = Gauge(
            p + "affinity_entries", "Entries in the bounded affinity index.", registry=registry
        )
        self.retries = Counter(
            p + "retries_total",
            "Requests retried on another upstream before the first byte.",
            registry=registry,
        )
        self.continuations = Counter(
            p + "stream_continuations_total",
            "Streams continued on another upstream mid-answer, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.tokens = Counter(
            p + "tokens_total",
            "Tokens served, by tenant, upstream kind and direction.",
            ["tenant", "kind", "direction"],
            registry=registry,
        )
        self.cloud_cost = Counter(
            p + "cloud_cost_usd_total",
            "Money spent on cloud upstreams (their configured prices).",
            ["tenant"],
            registry=registry,
        )
        self.saved = Counter(
            p + "saved_usd_total",
            "Cloud-price equivalent of the tokens served locally.",
            ["tenant"],
            registry=registry,
        )
        self.dependency_errors = Counter(
            p + "dependency_errors_total",
            "Failed calls to a shared dependency (redis) by component; the request went on degraded.",
            ["dependency", "component"],
            registry=registry,
        )
        self.dependency_up = Gauge(
            p + "dependency_up",
            "1 while a shared dependency answers, 0 while the gateway runs without it.",
            ["dependency"],
            registry=registry,
        )
