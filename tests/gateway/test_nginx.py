"""`localseek deploy nginx`: the rendered block passes `nginx -t` and really proxies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from localseek.errors import ConfigError
from localseek.gateway.config import parse_gateway_config
from localseek.ops.deploy.nginx import render_nginx

from .conftest import chat
from .fakes import full_answer
from .servers import free_port, stop_process, wait_http


def config(port: int, *upstreams: dict) -> dict:
    return {"port": port, "upstreams": list(upstreams)}


def test_render_has_weights_backup_and_no_cloud():
    text = render_nginx(
        parse_gateway_config(
            config(
                8000,
                {"name": "a", "url": "http://10.0.0.1:8080/v1", "weight": 3},
                {"name": "b", "url": "http://10.0.0.2:8080/v1", "backup": True},
                {"name": "cloud", "url": "https://api.deepseek.com/v1", "kind": "cloud"},
            )
        )
    )
    assert "server 10.0.0.1:8080 weight=3" in text
    assert "server 10.0.0.2:8080 weight=1" in text and text.count(" backup;") == 1
    assert "api.deepseek.com" not in text and "# Not rendered (kind: cloud): cloud" in text


def test_mixed_local_paths_cannot_be_rendered():
    with pytest.raises(ConfigError, match="share one scheme and path"):
        render_nginx(
            parse_gateway_config(
                config(
                    8000,
                    {"name": "a", "url": "http://h:1/v1"},
                    {"name": "b", "url": "http://h:2/api/v1"},
                )
            )
        )


def _nginx_conf(tmp_path: Path, snippet: str) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\n"
        f"events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp_path};\n"
        f"  proxy_temp_path {tmp_path};\n{snippet}}}\n"
    )
    return conf


def test_rendered_config_passes_nginx_t_and_proxies(fake, tmp_path):
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx not installed (apt-get install -y nginx)")
    a, b = fake("a"), fake("b")
    port = free_port()
    text = render_nginx(
        parse_gateway_config(
            config(
                port,
                {"name": "a", "url": a.url + "/v1", "weight": 2},
                {"name": "b", "url": b.url + "/v1", "backup": True},
            )
        )
    )
    conf = _nginx_conf(tmp_path, text)
    check = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat(), timeout=10)
        assert r.json()["choices"][0]["message"]["content"] == full_answer(8)
        assert len(a.completions()) == 1 and b.completions() == []  # the backup stays idle
    finally:
        stop_process(proc)


def test_cli_renders_from_a_config_file(tmp_path, capsys):
    from localseek.cli import main

    path = tmp_path / "gateway.yaml"
    path.write_text("upstreams:\n  - {name: a, url: 'http://10.0.0.1:8080/v1', weight: 2}\n")
    assert main(["deploy", "nginx", "--config", str(path)]) == 0
    assert "server 10.0.0.1:8080 weight=2" in capsys.readouterr().out
