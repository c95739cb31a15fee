"""The `localseek serve` dashboard: throughput, latency, queue, KV cache, refusals."""

from __future__ import annotations

from localseek.ops.deploy.grafana.panels import Dashboard, Query, Row, panel

S = '{instance=~"$instance"}'
P = "localseek:"


def _quantiles(metric: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({P}{metric}_bucket{S}[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


def server_dashboard() -> Dashboard:
    rate = "[$__rate_interval]"
    return Dashboard(
        uid="localseek-server",
        title="localseek / server",
        rows=(
            Row(
                "Throughput and latency",
                (
                    panel(
                        "Tokens per second",
                        Query(f"sum(rate({P}generation_tokens_total{S}{rate}))", "generated"),
                        Query(f"sum(rate({P}prompt_tokens_total{S}{rate}))", "prompt"),
                        unit="short",
                    ),
                    panel(
                        "Time to first token", *_quantiles("time_to_first_token_seconds"), unit="s"
                    ),
                    panel(
                        "Inter-token latency",
                        *_quantiles("time_per_output_token_seconds"),
                        unit="s",
                    ),
                    panel(
                        "End-to-end latency", *_quantiles("e2e_request_latency_seconds"), unit="s"
                    ),
                ),
            ),
            Row(
                "Load",
                (
                    panel(
                        "Running and waiting",
                        Query(f"sum({P}num_requests_running{S})", "running"),
                        Query(f"sum({P}num_requests_waiting{S})", "waiting"),
                    ),
                    panel(
                        "KV cache in use",
                        Query(f"{P}kv_cache_usage_perc{S}", "{{instance}}"),
                        unit="percentunit",
                    ),
                    panel(
                        "Prefix cache hit rate",
                        Query(
                            f"sum(rate({P}prefix_cache_hits_total{S}{rate})) / "
                            f"clamp_min(sum(rate({P}prefix_cache_queries_total{S}{rate})), 1e-9)",
                            "hit rate",
                        ),
                        unit="percentunit",
                    ),
                    panel(
                        "Queue wait",
                        Query(f"max({P}estimated_wait_seconds{S})", "estimated wait"),
                        *_quantiles("request_queue_time_seconds"),
                        unit="s",
                    ),
                ),
            ),
            Row(
                "Refusals and errors",
                (
                    panel(
                        "429 refusals by reason",
                        Query(
                            f"sum by (reason) (rate({P}requests_refused_total{S}{rate}))",
                            "{{reason}}",
                        ),
                        unit="reqps",
                    ),
                    panel(
                        "Errors by status",
                        Query(
                            f"sum by (status) (rate({P}request_errors_total{S}{rate}))",
                            "{{status}}",
                        ),
                        unit="reqps",
                    ),
                    panel(
                        "Preemptions",
                        Query(f"sum(rate({P}num_preemptions_total{S}{rate}))", "preempted"),
                        unit="ops",
                    ),
                    panel(
                        "Finished by reason",
                        Query(
                            f"sum by (finished_reason) (rate({P}request_success_total{S}{rate}))",
                            "{{finished_reason}}",
                        ),
                        unit="reqps",
                    ),
                ),
            ),
        ),
    )
