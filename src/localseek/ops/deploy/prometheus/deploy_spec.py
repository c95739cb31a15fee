"""Prometheus scrape configs and the autoscaling query for a deploy spec (compose, k8s)."""

from __future__ import annotations

from typing import Any

from localseek.ops.deploy.spec import ENGINE_PORT, DeploySpec, engines

# The metric autoscaling follows: requests admitted but not yet running (server queue + engine).
WAITING_METRIC = "localseek:num_requests_waiting"
PART_OF = "localseek"


def waiting_query(spec: DeploySpec, model: str, version: str) -> str:
    """PromQL: waiting requests summed over one version's replicas."""
    labels = f'namespace="{spec.namespace}",model="{model}",version="{version}"'
    return f"sum({WAITING_METRIC}{{{labels}}})"


def compose_scrape_config(spec: DeploySpec, gateway_host: str) -> dict[str, Any]:
    """prometheus.yml for compose: every engine replica and the gateway, by service name."""
    engine_targets = []
    for engine in engines(spec):
        for i in range(engine.version.replicas):
            engine_targets.append(
                {
                    "targets": [f"{engine.name}-{i}:{ENGINE_PORT}"],
                    "labels": {
                        "namespace": spec.namespace,
                        "model": engine.model.name,
                        "version": engine.version.name,
                    },
                }
            )
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {"job_name": "localseek-engine", "static_configs": engine_targets},
            {
                "job_name": "localseek-gateway",
                "static_configs": [{"targets": [f"{gateway_host}:{spec.gateway_port}"]}],
            },
        ],
    }


def k8s_scrape_config(spec: DeploySpec) -> dict[str, Any]:
    """A scrape job for a Prometheus in the cluster: the namespace's localseek pods, with the
    pod's model, version, component, namespace and pod names as labels (the KEDA query and the
    prometheus-adapter rule select on them)."""
    label = "__meta_kubernetes_pod_label_"
    relabel = [
        {
            "source_labels": [label + "app_kubernetes_io_part_of"],
            "regex": PART_OF,
            "action": "keep",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": "http",
            "action": "keep",
        },
        {"source_labels": [label + "app_kubernetes_io_component"], "target_label": "component"},
        {"source_labels": [label + "localseek_io_model"], "target_label": "model"},
        {"source_labels": [label + "localseek_io_version"], "target_label": "version"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    return {
        "scrape_configs": [
            {
                "job_name": "localseek",
                "scrape_interval": "5s",
                "kubernetes_sd_configs": [
                    {"role": "pod", "namespaces": {"names": [spec.namespace]}}
                ],
                "relabel_configs": relabel,
            }
        ]
    }
