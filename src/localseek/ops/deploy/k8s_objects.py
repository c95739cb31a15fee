"""Kubernetes objects for localseek: engine and gateway Deployments, Services, PDB, Redis."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from localseek.ops.deploy.prometheus.deploy_spec import PART_OF
from localseek.ops.deploy.spec import ENGINE_PORT, PRESTOP_SLEEP_S, REDIS_PORT, DeploySpec, Engine

GATEWAY = "gateway"
REDIS = "redis"
ADMIN_SECRET = "localseek-admin"  # created by the operator: kubectl create secret generic ...
_UID = 10001  # the images' non-root user
Obj = dict[str, Any]


def meta(spec: DeploySpec, name: str, labels: dict[str, str]) -> Obj:
    return {"name": name, "namespace": spec.namespace, "labels": labels}


def _labels(component: str, **extra: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component, **extra}


def engine_labels(engine: Engine) -> dict[str, str]:
    return _labels(
        "engine",
        **{"localseek.io/model": engine.model.name, "localseek.io/version": engine.version.name},
    )


def _http_probe(path: str, period: int, failures: int, timeout: int = 3) -> Obj:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _pod_security() -> Obj:
    return {"runAsNonRoot": True, "runAsUser": _UID, "runAsGroup": _UID, "fsGroup": _UID}


def _container_security() -> Obj:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def engine_deployment(spec: DeploySpec, engine: Engine) -> Obj:
    """One version's replicas. /health is readiness (503 while loading and draining); liveness
    asks /load, which fails only if the engine loop died, so a draining pod is not killed."""
    labels = engine_labels(engine)
    version = engine.version
    resources: Obj = {"requests": {"cpu": version.cpu, "memory": version.memory}}
    resources["limits"] = {"memory": version.memory}
    if version.gpus:
        resources["requests"]["nvidia.com/gpu"] = str(version.gpus)
        resources["limits"]["nvidia.com/gpu"] = str(version.gpus)
    container = {
        "name": "engine",
        "image": engine.image(spec),
        "args": engine.serve_args(spec),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT}],
        "resources": resources,
        # Weight loading can take many minutes; liveness and readiness start after it.
        "startupProbe": _http_probe("/health", 10, spec.startup_failure_threshold),
        "readinessProbe": _http_probe("/health", 5, 2),
        "livenessProbe": _http_probe("/load", 10, 3, timeout=5),
        # Endpoints drop the pod while it sleeps; then SIGTERM drains what was admitted.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "volumeMounts": [
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "cache", "mountPath": "/cache"},
        ],
        "securityContext": _container_security(),
    }
    pod: Obj = {
        "terminationGracePeriodSeconds": spec.grace_period_s,
        "securityContext": _pod_security(),
        "containers": [container],
        "volumes": [
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": spec.model_pvc, "readOnly": True},
            },
            {"name": "cache", "emptyDir": {}},
        ],
    }
    if version.gpus:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(ENGINE_PORT)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(spec, engine.name, labels),
        "spec": {
            "replicas": version.replicas,
            "selector": {"matchLabels": labels},
            # A new replica must be ready (weights loaded) before an old one drains.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
        },
    }


def service(
    spec: DeploySpec, name: str, labels: dict[str, str], port: int, port_name: str = "http"
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(spec, name, labels),
        "spec": {
            "selector": labels,
            "ports": [{"name": port_name, "port": port, "targetPort": port_name}],
        },
    }


def gateway_objects(spec: DeploySpec, gateway_yaml: str) -> list[Obj]:
    """ConfigMap, Deployment, Service and PodDisruptionBudget of the gateway."""
    labels = _labels("gateway")
    checksum = hashlib.sha256(gateway_yaml.encode()).hexdigest()[:16]
    container: Obj = {
        "name": "gateway",
        "image": spec.gateway_image,
        "args": ["--config", "/etc/localseek/gateway.yaml", "--host", "0.0.0.0"]
        + ["--port", str(spec.gateway_port)],
        "ports": [{"name": "http", "containerPort": spec.gateway_port}],
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "readinessProbe": _http_probe("/health", 5, 2),
        "livenessProbe": _http_probe("/health", 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/localseek", "readOnly": True}],
        "securityContext": _container_security(),
    }
    if spec.admin_key_env:
        ref = {"name": ADMIN_SECRET, "key": "key"}
        container["env"] = [{"name": spec.admin_key_env, "valueFrom": {"secretKeyRef": ref}}]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(spec, GATEWAY, labels),
        "spec": {
            "replicas": spec.gateway_replicas,
            "selector": {"matchLabels": labels},
            "template": {
                # A changed config rolls the pods; `kill -HUP` reloads one in place instead.
                "metadata": {
                    "labels": labels,
                    "annotations": {"localseek.io/config-sha": checksum},
                },
                "spec": {
                    "terminationGracePeriodSeconds": spec.grace_period_s,
                    "securityContext": _pod_security(),
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": "gateway-config"}}],
                },
            },
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(spec, "gateway-config", labels),
        "data": {"gateway.yaml": gateway_yaml},
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(spec, GATEWAY, labels),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
    }
    return [config_map, deployment, service(spec, GATEWAY, labels, spec.gateway_port), pdb]


def redis_objects(spec: DeploySpec) -> list[Obj]:
    labels = _labels("redis")
    container = {
        "name": "redis",
        "image": spec.redis_image,
        # Cache entries and rate-limit buckets are worth nothing after a restart.
        "args": ["--save", "", "--appendonly", "no"],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "readinessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 5},
        "securityContext": _container_security(),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(spec, REDIS, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 999},
                    "containers": [container],
                },
            },
        },
    }
    return [deployment, service(spec, REDIS, labels, REDIS_PORT, "redis")]


def dump_all(objects: list[Obj]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
