"""gateway.yaml: parsed into frozen dataclasses; every error names the field path."""

from __future__ import annotations

import dataclasses
import logging

import httpx
import pytest

from localseek.errors import ConfigError
from localseek.gateway.app import create_app
from localseek.gateway.config import load_gateway_config, parse_gateway_config

from .conftest import chat
from .servers import free_port

GOOD = {"upstreams": [{"name": "a", "url": "http://127.0.0.1:1/v1"}]}


def test_example_config_loads():
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "gateway.yaml"
    config = load_gateway_config(example)
    assert {u.kind for u in config.upstreams} == {"local", "cloud"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"upstreams": [{"name": "a", "url": "http://x/v1", "wieght": 2}]}, "upstreams[0].wieght"),
        ({**GOOD, "cache": {"backend": "disk"}}, "cache"),
        ({**GOOD, "cache": {"ttl": 5}}, "cache.ttl"),
        (
            {"upstreams": [{"name": "a", "url": "http://x/v1"}, {"name": "b", "url": "ftp://x"}]},
            "upstreams[1]",
        ),
        (
            {"upstreams": [{"name": "a", "url": "http://x/v1", "weight": "heavy"}]},
            "upstreams[0].weight",
        ),
        ({"upstreams": [{"url": "http://x/v1"}]}, "upstreams[0].name"),
        ({"upstreams": [{"name": "c", "url": "http://x/v1", "kind": "cloud"}]}, "kind: local"),
        ({**GOOD, "policy": {"detectors": ["passport"]}}, "passport"),
        ({**GOOD, "balancer": {"strategy": "random"}}, "strategy"),
        ({"upstreams": [{"name": "a", "url": "http://x/v1", "server": "tgi"}]}, "server"),
        ({**GOOD, "limits": {"on_redis_error": "ignore"}}, "on_redis_error"),
        ({**GOOD, "policy": {"patterns": ["("]}}, "'('"),
        ({**GOOD, "limits": {"backend": "redis"}}, "redis_url"),
        ({**GOOD, "tenants": [{"name": "t", "tokens_per_minute": 0}]}, "tenants[0]"),
        ({}, "upstreams"),
    ],
)
def test_invalid_config_names_the_field(data, named):
    with pytest.raises(ConfigError) as err:
        parse_gateway_config(data)
    assert named in err.value.message


def test_invalid_yaml_file_fails_at_start_with_the_field(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("upstreams:\n  - name: a\n    url: http://127.0.0.1:1/v1\n    backup: maybe\n")
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.backup"):
        load_gateway_config(path)
    from localseek.cli import main

    assert main(["gateway", "--config", str(path)]) == 1


def test_missing_upstream_key_env_fails_at_start(monkeypatch):
    monkeypatch.delenv("GW_TEST_MISSING_KEY", raising=False)
    config = parse_gateway_config(
        {
            "upstreams": [
                {"name": "a", "url": "http://127.0.0.1:1/v1", "api_key_env": "GW_TEST_MISSING_KEY"}
            ]
        }
    )
    with pytest.raises(ConfigError, match="GW_TEST_MISSING_KEY"):
        create_app(config)


def test_unreachable_upstream_at_start_is_reported_not_fatal(fake, gateway, caplog):
    good = fake("good")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with caplog.at_level(logging.WARNING, logger="localseek.gateway.health"):
        url = gateway({"upstreams": [{"name": "dead", "url": dead}, good.upstream()]})
    assert "dead" in caplog.text and "not healthy at start (circuit closed)" in caplog.text
    for _ in range(4):
        assert httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10).status_code == 200
