"""The server's Prometheus metrics, on a registry the app owns (never created at import).

Names follow vLLM's (`vllm:num_requests_running` -> `localseek:num_requests_running`, ...) so a
Grafana user who knows vLLM's dashboards recognises them. Engine counters and gauges are read
from a snapshot at scrape time; latencies are observed per request as they happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

P = "localseek:"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5)


@dataclass(frozen=True)
class LoadSample:
    """What the scrape-time collector reports; built by the server from engine + admission."""

    num_running: int
    num_waiting: int
    queued_tokens: int
    kv_usage: float
    estimated_wait_s: float
    generation_tokens_per_s: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    prompt_tokens: int
    generation_tokens: int
    preemptions: int


class _SnapshotCollector(Collector):
    def __init__(self, sample: Callable[[], LoadSample | None]):
        self._sample = sample

    def describe(self) -> Iterator[Metric]:
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        sample = self._sample()
        return self._families(sample) if sample is not None else iter(())

    @staticmethod
    def _families(s: LoadSample | None) -> Iterator[Metric]:
        gauges = [
            ("num_requests_running", "Sequences running in the engine.", "num_running"),
            (
                "num_requests_waiting",
                "Requests waiting (admission queue + engine queue).",
                "num_waiting",
            ),
            (
                "queued_tokens",
                "Prompt + expected output tokens waiting in the queue.",
                "queued_tokens",
            ),
            ("kv_cache_usage_perc", "Fraction of KV cache blocks in use (1 = full).", "kv_usage"),
            (
                "estimated_wait_seconds",
                "Estimated wait before a new request starts.",
                "estimated_wait_s",
            ),
            (
                "generation_tokens_per_second",
                "Recent decode throughput.",
                "generation_tokens_per_s",
            ),
        ]
        counters = [
            (
                "prefix_cache_queries",
                "Prompt tokens looked up in the prefix cache.",
                "prefix_cache_queries",
            ),
            ("prefix_cache_hits", "Prompt tokens found in the prefix cache.", "prefix_cache_hits"),
            ("prompt_tokens", "Prompt tokens processed.", "prompt_tokens"),
            ("generation_tokens", "Tokens generated.", "generation_tokens"),
            (
                "num_preemptions",
                "Sequences preempted (KV dropped, recomputed later).",
                "preemptions",
            ),
        ]
        for name, doc, attr in gauges:
            family = GaugeMetricFamily(P + name, doc)
            if s is not None:
                family.add_metric([], float(getattr(s, attr)))
            yield family
        for name, doc, attr in counters:
            family = CounterMetricFamily(P + name, doc)
            if s is not None:
                family.add_metric([], float(getattr(s, attr)))
            yield family


class ServerMetrics:
    """Every metric `localseek serve` exports. Labels come from fixed sets (reasons, routes)."""

    def __init__(self, registry: CollectorRegistry, sample: Callable[[], LoadSample | None]):
        self.registry = registry
        registry.register(_SnapshotCollector(sample))
        self.time_to_first_token = Histogram(
            P + "time_to_first_token_seconds",
            "Time from arrival to the first output token.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            P + "time_per_output_token_seconds",
            "Mean time between output tokens, per request.",
            buckets=_TOKEN_LATENCY_BUCKETS,
            registry=registry,
        )
        self.e2e_request_latency = Histogram(
            P + "e2e_request_latency_seconds",
            "Time from arrival to the last token.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_queue_time = Histogram(
            P + "request_queue_time_seconds",
            "Time from arrival until the engine first scheduled the request.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_success = Counter(
            P + "request_success_total",
            "Requests finished, by finish reason.",
            ["finished_reason"],
            registry=registry,
        )
        self.requests_refused = Counter(
            P + "requests_refused_total",
            "Requests refused for load (429), by reason: queue_full, queue_tokens, deadline, "
            "displaced, expired.",
            ["reason"],
            registry=registry,
        )
        self.request_errors = Counter(
            P + "request_errors_total",
            "Requests answered with an error, by HTTP status.",
            ["status"],
            registry=registry,
        )

    def observe_request(
        self,
        *,
        arrival: float,
        first_scheduled: float | None,
        first_token: float | None,
        finished: float,
        num_output_tokens: int,
        finish_reason: str | None,
    ) -> None:
        """Record one engine sequence's timings (monotonic seconds)."""
        if first_scheduled is not None:
            self.request_queue_time.observe(max(0.0, first_scheduled - arrival))
        if first_token is not None:
            self.time_to_first_token.observe(max(0.0, first_token - arrival))
            if num_output_tokens > 1:
                tpot = (finished - first_token) / (num_output_tokens - 1)
                self.time_per_output_token.observe(max(0.0, tpot))
        self.e2e_request_latency.observe(max(0.0, finished - arrival))
        self.request_success.labels(finish_reason or "unknown").inc()
