"""The `localseek gateway` dashboard: upstreams, failover, cloud overflow, cache, tenants, money."""

from __future__ import annotations

from localseek.ops.deploy.grafana.panels import Dashboard, Query, Row, panel

S = '{instance=~"$instance"}'
G = "localseek_gateway_"
R = "[$__rate_interval]"

_CIRCUIT = (
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green"},
            "1": {"text": "half-open", "color": "yellow"},
            "2": {"text": "open", "color": "red"},
        },
    },
)


def _by(labels: str, metric: str, legend: str) -> Query:
    return Query(f"sum by ({labels}) (rate({G}{metric}{S}{R}))", legend)


def gateway_dashboard() -> Dashboard:
    return Dashboard(
        uid="localseek-gateway",
        title="localseek / gateway",
        rows=(
            Row(
                "Upstreams",
                (
                    panel(
                        "In flight per upstream",
                        Query(f"sum by (upstream) ({G}upstream_in_flight{S})", "{{upstream}}"),
                    ),
                    panel(
                        "Circuit state",
                        Query(f"max by (upstream) ({G}upstream_circuit_state{S})", "{{upstream}}"),
                        kind="state-timeline",
                        mappings=_CIRCUIT,
                    ),
                    panel(
                        "Upstream latency p99",
                        Query(
                            "histogram_quantile(0.99, sum by (upstream, le) "
                            f"(rate({G}upstream_latency_seconds_bucket{S}{R})))",
                            "{{upstream}}",
                        ),
                        unit="s",
                    ),
                    panel(
                        "Upstream errors by kind",
                        _by("upstream, kind", "upstream_errors_total", "{{upstream}} {{kind}}"),
                        unit="reqps",
                    ),
                ),
            ),
            Row(
                "Failover and overflow",
                (
                    panel(
                        "Failovers",
                        Query(f"sum(rate({G}retries_total{S}{R}))", "retried before first byte"),
                        _by("outcome", "stream_continuations_total", "continued: {{outcome}}"),
                        unit="reqps",
                    ),
                    panel(
                        "Overflow to cloud and kept local",
                        _by("reason", "overflow_reasons_total", "overflow: {{reason}}"),
                        _by("tenant", "overflowed_total", "overflow {{tenant}}"),
                        _by("reason", "local_only_total", "kept local: {{reason}}"),
                        _by("reason", "local_only_refused_total", "local-only refused: {{reason}}"),
                        unit="reqps",
                    ),
                    panel(
                        "Queue depth",
                        Query(f"sum({G}queue_depth{S})", "waiting for a local slot"),
                    ),
                    panel(
                        "Requests by status",
                        _by("status", "requests_total", "{{status}}"),
                        unit="reqps",
                    ),
                ),
            ),
            Row(
                "Cache, tenants, money",
                (
                    panel(
                        "Response cache hit rate",
                        Query(
                            f"sum(rate({G}cache_hits_total{S}{R})) / clamp_min(sum(rate("
                            f"{G}cache_hits_total{S}{R})) + sum(rate({G}cache_misses_total{S}{R})), 1e-9)",
                            "hit rate",
                        ),
                        unit="percentunit",
                    ),
                    panel(
                        "Limits hit per tenant (429)",
                        _by("tenant, reason", "shed_total", "{{tenant}} {{reason}}"),
                        unit="reqps",
                    ),
                    panel(
                        "Tokens by tenant and kind",
                        _by("tenant, kind", "tokens_total", "{{tenant}} {{kind}}"),
                        unit="short",
                    ),
                    panel(
                        "Money: spent in cloud, saved locally (per hour)",
                        Query(
                            f"sum by (tenant) (rate({G}cloud_cost_usd_total{S}[1h])) * 3600",
                            "spent {{tenant}}",
                        ),
                        Query(
                            f"sum by (tenant) (rate({G}saved_usd_total{S}[1h])) * 3600",
                            "saved {{tenant}}",
                        ),
                        unit="currencyUSD",
                    ),
                    panel(
                        "Saved locally, total in range",
                        Query(f"sum(increase({G}saved_usd_total{S}[$__range]))", "saved"),
                        kind="stat",
                        unit="currencyUSD",
                    ),
                    panel(
                        "Spent in cloud, total in range",
                        Query(f"sum(increase({G}cloud_cost_usd_total{S}[$__range]))", "spent"),
                        kind="stat",
                        unit="currencyUSD",
                    ),
                ),
            ),
        ),
    )
