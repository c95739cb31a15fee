"""`localseek deploy k8s`: plain Kubernetes manifests for engines, gateway, Redis, autoscaling."""

from __future__ import annotations

import yaml

from localseek.ops.deploy.gateway_config import render_gateway_config
from localseek.ops.deploy.k8s_autoscale import adapter_rules, hpa, scaled_object
from localseek.ops.deploy.k8s_objects import (
    REDIS,
    dump_all,
    engine_deployment,
    engine_labels,
    gateway_objects,
    redis_objects,
    service,
)
from localseek.ops.deploy.prometheus.deploy_spec import k8s_scrape_config
from localseek.ops.deploy.spec import ENGINE_PORT, DeploySpec, engines

HEADER = "# Rendered by `localseek deploy k8s` from {spec}; edit the spec, not this file.\n"
HPA_FILE = "autoscaling-hpa.yaml"  # the alternative to KEDA: apply one of the two


def render_k8s(spec: DeploySpec, spec_name: str = "the deploy spec") -> dict[str, str]:
    """{file name: content}. `kubectl apply -k DIR` applies everything but the HPA variant."""
    gateway_config = render_gateway_config(
        spec,
        # One upstream per version: its Service spreads requests over the version's pods.
        lambda e: [(e.name, f"http://{e.name}.{spec.namespace}.svc:{ENGINE_PORT}/v1")],
        f"{REDIS}.{spec.namespace}.svc",
    )
    header = HEADER.format(spec=spec_name)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace}}
    files = {
        "namespace.yaml": dump_all([namespace]),
        "gateway.yaml": dump_all(gateway_objects(spec, _dump(gateway_config))),
        "redis.yaml": dump_all(redis_objects(spec)),
    }
    for engine in engines(spec):
        files[f"{engine.name}.yaml"] = dump_all(
            [
                engine_deployment(spec, engine),
                service(spec, engine.name, engine_labels(engine), ENGINE_PORT),
            ]
        )
    resources = list(files)
    if spec.autoscaling.enabled:
        files["autoscaling-keda.yaml"] = dump_all([scaled_object(spec, e) for e in engines(spec)])
        files[HPA_FILE] = dump_all([hpa(spec, e) for e in engines(spec)])
        files["prometheus-adapter-rules.yaml"] = _dump(adapter_rules())
        resources.append("autoscaling-keda.yaml")
    files["prometheus-scrape.yml"] = _dump(k8s_scrape_config(spec))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }
    files["kustomization.yaml"] = _dump(kustomization)
    return {name: header + text for name, text in files.items()}


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
