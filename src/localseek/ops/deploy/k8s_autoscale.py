"""Engine autoscaling on queue depth (waiting requests), not CPU: KEDA, or an HPA + adapter."""

from __future__ import annotations

from typing import Any

from localseek.ops.deploy.k8s_objects import Obj, meta
from localseek.ops.deploy.prometheus.deploy_spec import WAITING_METRIC, waiting_query
from localseek.ops.deploy.spec import DeploySpec, Engine

# The name prometheus-adapter gives the metric in the custom metrics API (no colons there).
ADAPTED_METRIC = WAITING_METRIC.replace(":", "_")


def _scaler(spec: DeploySpec, engine: Engine, api: str, kind: str, body: Obj) -> Obj:
    """An autoscaler object aimed at the engine's Deployment."""
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": meta(spec, engine.name, {"app.kubernetes.io/part-of": "localseek"}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": engine.name},
            **body,
        },
    }


def scaled_object(spec: DeploySpec, engine: Engine) -> Obj:
    """KEDA: replicas = ceil(sum of waiting requests / waiting_per_replica), within bounds."""
    scaling = spec.autoscaling
    return _scaler(
        spec,
        engine,
        "keda.sh/v1alpha1",
        "ScaledObject",
        {
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": 15,
            # Scaling in drains a replica (up to max_request_s): do not flap.
            "cooldownPeriod": max(300, spec.max_request_s),
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": scaling.prometheus_url,
                        "query": waiting_query(spec, engine.model.name, engine.version.name),
                        "threshold": str(scaling.waiting_per_replica),
                    },
                }
            ],
        },
    )


def hpa(spec: DeploySpec, engine: Engine) -> Obj:
    """The same policy without KEDA: an HPA on the per-pod metric served by prometheus-adapter
    (rules in prometheus-adapter-rules.yaml)."""
    scaling = spec.autoscaling
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": ADAPTED_METRIC},
            "target": {"type": "AverageValue", "averageValue": str(scaling.waiting_per_replica)},
        },
    }
    return _scaler(
        spec,
        engine,
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        {
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [metric],
            # Scaling in drains a replica (up to max_request_s): do not flap.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": max(300, spec.max_request_s)}},
        },
    )


def adapter_rules() -> dict[str, Any]:
    """prometheus-adapter `rules:` exposing the waiting-requests gauge per pod."""
    return {
        "rules": [
            {
                "seriesQuery": f'{WAITING_METRIC}{{namespace!="",pod!=""}}',
                "resources": {
                    "overrides": {
                        "namespace": {"resource": "namespace"},
                        "pod": {"resource": "pod"},
                    }
                },
                "name": {"matches": f"^{WAITING_METRIC}$", "as": ADAPTED_METRIC},
                "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
            }
        ]
    }
