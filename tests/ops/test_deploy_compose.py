"""`localseek deploy compose`: every service reference, port and volume in the rendered project
agrees with the gateway config and the scrape config rendered beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from localseek.cli import main
from localseek.errors import ConfigError
from localseek.gateway.config import load_gateway_config
from localseek.ops.deploy.spec import load_deploy_spec, parse_deploy_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "deploy.yaml"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compose")
    assert main(["deploy", "compose", str(EXAMPLE), "--out", str(out)]) == 0
    return out


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_every_reference_port_and_volume_resolves(rendered):
    compose = _load(rendered / "compose.yaml")
    services = compose["services"]
    spec = load_deploy_spec(EXAMPLE)
    engines = {n: s for n, s in services.items() if n.startswith("engine-")}
    assert len(engines) == sum(v.replicas for m in spec.models for v in m.versions)
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (rendered / source).is_file(), f"{name} mounts missing {source}"
            elif not source.startswith("/"):
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))
    assert f"{spec.gateway_port}:{spec.gateway_port}" in services["gateway"]["ports"]

    for engine in engines.values():
        command = engine["command"]
        assert command[0] == "serve" and command[1].startswith("/models/")
        assert f"{spec.model_store}:/models:ro" in engine["volumes"]
        assert _flag(command, "--drain-timeout") == str(spec.max_request_s)
        grace = int(engine["stop_grace_period"].rstrip("s"))
        assert grace > spec.max_request_s
        if "cuda" in engine["image"]:
            assert engine["deploy"]["resources"]["reservations"]["devices"][0]["count"] >= 1


def test_gateway_config_routes_to_the_engine_services(rendered, monkeypatch):
    monkeypatch.setenv("LOCALSEEK_ADMIN_KEY", "x")
    services = _load(rendered / "compose.yaml")["services"]
    config = load_gateway_config(rendered / "gateway.yaml")  # the gateway's own validation
    served = set()
    for upstream in config.upstreams:
        url = urlsplit(upstream.url)
        command = services[url.hostname]["command"]
        assert str(url.port) == _flag(command, "--port")
        assert upstream.models == (_flag(command, "--served-model-name"),)
        served.add(upstream.models[0])
    assert {v.model for m in config.models for v in m.versions} == served
    assert urlsplit(config.redis_url).hostname in services
    assert config.cache.backend == config.limits.backend == "redis"
    gateway_cmd = services["gateway"]["command"]
    assert int(_flag(gateway_cmd, "--port")) == config.port


def test_prometheus_scrapes_every_engine_and_the_gateway(rendered):
    services = _load(rendered / "compose.yaml")["services"]
    scrape = _load(rendered / "prometheus.yml")
    targets = [
        t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    for target in targets:
        host, port = target.split(":")
        command = services[host]["command"]
        assert _flag(command, "--port") == port
    engines = [n for n in services if n.startswith("engine-")]
    assert sorted(t.split(":")[0] for t in targets) == sorted([*engines, "gateway"])


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_accepts_the_file(rendered):
    command = _compose_command()
    if command is None:
        pytest.skip(
            "neither docker-compose nor `docker compose` is installed (apt: docker-compose)"
        )
    env = {**os.environ, "LOCALSEEK_ADMIN_KEY": "x"}
    result = subprocess.run(
        [*command, "-f", "compose.yaml", "config", "-q"],
        cwd=rendered,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # And it is a real check: a dangling service reference is refused.
    broken = _load(rendered / "compose.yaml")
    broken["services"]["gateway"]["depends_on"].append("no-such-service")
    (rendered / "broken.yaml").write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [*command, "-f", "broken.yaml", "config", "-q"], cwd=rendered, env=env, capture_output=True
    )
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": []}, "at least one model"),
        ({"namespace": "Bad_Name"}, "DNS label"),
        ({"models": [{"name": "m", "versions": [{"name": "a", "model": "/abs"}]}]}, "inside"),
        ({"surprise": 1}, "unknown field"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(change, message):
    data = {**_load(EXAMPLE), **change}
    with pytest.raises(ConfigError, match=message):
        parse_deploy_spec(data)


@pytest.mark.parametrize("target", ["compose", "k8s"])
def test_help_shows_the_options_and_defaults(target, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["deploy", target, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "spec" in out and f"(default: deploy-{target})" in out
