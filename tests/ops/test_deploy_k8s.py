"""`localseek deploy k8s`: manifests valid against the Kubernetes schemas (offline), internally
consistent, draining on termination, and autoscaling on a metric the server really exports."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from localseek.cli import main
from localseek.gateway.config import parse_gateway_config
from localseek.ops.deploy.spec import PRESTOP_SLEEP_S, load_deploy_spec

kubernetes_validate = pytest.importorskip("kubernetes_validate")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "deploy.yaml"
K8S_VERSION = "1.30"
CUSTOM = ("keda.sh/", "kustomize.config.k8s.io/")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    assert main(["deploy", "k8s", str(EXAMPLE), "--out", str(out)]) == 0
    return out


def objects(rendered: Path, pattern: str = "*.yaml") -> list[dict]:
    docs = []
    for path in sorted(rendered.glob(pattern)):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and "kind" in d]
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_builtin_object_passes_the_strict_schema(rendered):
    checked = 0
    for doc in objects(rendered):
        if doc["apiVersion"].startswith(CUSTOM):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 12
    # The validator is real: an unknown field is refused.
    deployment = by_kind(objects(rendered), "Deployment")["gateway"]
    deployment["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_services_select_their_deployments_and_name_real_ports(rendered):
    docs = objects(rendered)
    deployments = by_kind(docs, "Deployment")
    for name, svc in by_kind(docs, "Service").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        ports = {p["name"] for c in _containers(deployments[name]) for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    for d in deployments.values():
        assert (
            d["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )
    pdb = by_kind(docs, "PodDisruptionBudget")["gateway"]
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == deployments["gateway"]["spec"]["selector"]["matchLabels"]
    )


def _containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def test_engines_drain_load_slowly_and_get_their_gpus(rendered):
    spec = load_deploy_spec(EXAMPLE)
    engines = {
        n: d for n, d in by_kind(objects(rendered), "Deployment").items() if n.startswith("engine-")
    }
    assert sorted(engines) == sorted(
        f"engine-{m.name}-{v.name}" for m in spec.models for v in m.versions
    )
    for deployment in engines.values():
        pod = deployment["spec"]["template"]["spec"]
        [engine] = pod["containers"]
        args = engine["args"]
        drain = int(args[args.index("--drain-timeout") + 1])
        assert drain == spec.max_request_s
        assert pod["terminationGracePeriodSeconds"] > drain + PRESTOP_SLEEP_S
        assert engine["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP_S)]
        startup = engine["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= spec.startup_timeout_s
        assert engine["readinessProbe"]["httpGet"]["path"] == "/health"
        # /health is 503 while draining: liveness must not use it or a draining pod is killed.
        assert engine["livenessProbe"]["httpGet"]["path"] != "/health"
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
        mounts = {m["name"]: m for m in engine["volumeMounts"]}
        assert mounts["models"]["readOnly"] and args[1].startswith(mounts["models"]["mountPath"])
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == [spec.model_pvc]
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_gateway_config_map_routes_to_the_engine_services(rendered, monkeypatch):
    monkeypatch.setenv("LOCALSEEK_ADMIN_KEY", "x")
    docs = objects(rendered)
    services = by_kind(docs, "Service")
    config = parse_gateway_config(
        yaml.safe_load(by_kind(docs, "ConfigMap")["gateway-config"]["data"]["gateway.yaml"])
    )
    for upstream in config.upstreams:
        url = urlsplit(upstream.url)
        name, namespace, _ = url.hostname.split(".", 2)
        assert namespace == "localseek" and url.port == services[name]["spec"]["ports"][0]["port"]
        engine = by_kind(docs, "Deployment")[name]
        args = _containers(engine)[0]["args"]
        assert upstream.models == (args[args.index("--served-model-name") + 1],)
    redis = urlsplit(config.redis_url)
    assert redis.hostname.split(".")[0] in services
    gateway = _containers(by_kind(docs, "Deployment")["gateway"])[0]
    assert gateway["env"][0]["name"] == "LOCALSEEK_ADMIN_KEY"


def test_autoscalers_target_engine_deployments_and_kustomize_lists_real_files(rendered):
    docs = objects(rendered)
    deployments = by_kind(docs, "Deployment")
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        scalers = by_kind(docs, kind)
        assert set(scalers) == {n for n in deployments if n.startswith("engine-")}
        for scaler in scalers.values():
            assert scaler["spec"]["scaleTargetRef"]["name"] in deployments
    kustomization = yaml.safe_load((rendered / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (rendered / resource).is_file()
    assert "autoscaling-hpa.yaml" not in kustomization["resources"]  # KEDA or HPA, not both


def _queries(rendered: Path) -> list[str]:
    keda = by_kind(objects(rendered), "ScaledObject").values()
    queries = [t["metadata"]["query"] for s in keda for t in s["spec"]["triggers"]]
    rules = yaml.safe_load((rendered / "prometheus-adapter-rules.yaml").read_text())["rules"]
    return queries + [r["seriesQuery"] for r in rules]


def test_autoscaling_queries_name_a_gauge_the_server_exports(rendered, tmp_path):
    from serve_process import ServeProcess
    from tiny_models import make_tiny_model

    names = {m for q in _queries(rendered) for m in re.findall(r"localseek:[a-z_]+", q)}
    assert names  # the queries do name localseek metrics
    model = make_tiny_model(tmp_path / "model", "llama")
    with ServeProcess(model) as server:
        exported = {
            f.name: f.type
            for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)
        }
    for name in names:
        assert exported.get(name) == "gauge", f"{name} is not a gauge the server exports"
    scrape = yaml.safe_load((rendered / "prometheus-scrape.yml").read_text())
    targets = {r.get("target_label") for r in scrape["scrape_configs"][0]["relabel_configs"]}
    for query in _queries(rendered):  # every label a query selects on is set by the scrape
        assert set(re.findall(r"(\w+)!?=", query)) <= targets
