"""Per-version metrics of the gateway's model versions, so a canary can be compared to stable."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class VersionMetrics:
    """Labels are the public model and version names from the config (bounded), and statuses."""

    def __init__(self, registry: CollectorRegistry):
        p = "localseek_gateway_version_"
        self.requests = Counter(
            p + "requests_total",
            "Client requests routed to each model version, by HTTP status.",
            ["model", "version", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            p + "request_seconds",
            "Time from routing a request to a version to its last byte (whole stream).",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.weight = Gauge(
            p + "weight",
            "Current routing weight of each version.",
            ["model", "version"],
            registry=registry,
        )
        self.reloads = Counter(
            "localseek_gateway_config_reloads_total",
            "Config reloads by outcome (applied, refused).",
            ["outcome"],
            registry=registry,
        )
