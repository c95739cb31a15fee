"""`localseek deploy nginx`: the nginx upstream block equivalent to a gateway config."""

from __future__ import annotations

from urllib.parse import urlsplit

from localseek.errors import ConfigError
from localseek.gateway.config import GatewayConfig, UpstreamConfig

POOL = "localseek_local"


def render_nginx(config: GatewayConfig) -> str:
    """An nginx `http {}`-context snippet: one weighted pool of the local upstreams (backups
    marked `backup`) and a server proxying the OpenAI routes to it, streaming unbuffered.

    nginx cannot read request bodies, so what only the gateway can do is absent: cloud
    upstreams (the data policy decides who may reach them), caching, per-key limits and
    mid-stream continuation. Drop the file into conf.d/ (or `include` it inside `http {}`).
    """
    local = [u for u in config.upstreams if u.kind == "local"]
    scheme, path = _common_scheme_and_path(local)
    health = config.health
    fail_timeout = max(1, round(health.backoff_max_s))
    lines = [
        "# Rendered by `localseek deploy nginx` from the gateway config; edit the config, not this.",
        "# Cloud upstreams, the data policy, the cache and per-key limits live only in the gateway.",
    ]
    skipped = [u.name for u in config.upstreams if u.kind == "cloud"]
    if skipped:
        lines.append(f"# Not rendered (kind: cloud): {', '.join(skipped)}")
    lines += [f"upstream {POOL} {{", "    least_conn;"]
    for u in local:
        netloc = urlsplit(u.url).netloc
        line = f"    server {netloc} weight={u.weight} max_fails={health.failure_threshold} fail_timeout={fail_timeout}s"
        if u.max_concurrency:
            line += f" max_conns={u.max_concurrency}"
        lines.append(line + (" backup;" if u.backup else ";"))
    lines += ["    keepalive 64;", "}", ""]
    timeout = max(1, round(config.admission.request_timeout_s))
    connect = max(1, round(config.admission.connect_timeout_s))
    lines += [
        "server {",
        f"    listen {config.port};",
        "    client_max_body_size 16m;",
        "    location /v1/ {",
        f"        proxy_pass {scheme}://{POOL}{path}/;",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_buffering off;  # server-sent events stream through unbuffered",
        f"        proxy_connect_timeout {connect}s;",
        f"        proxy_read_timeout {timeout}s;",
        "        # Retry another server on failures before the first byte (POST included).",
        "        proxy_next_upstream error timeout http_429 http_502 http_503 http_504 non_idempotent;",
        f"        proxy_next_upstream_tries {config.admission.max_attempts};",
        "    }",
        "    location = /health {",
        f"        proxy_pass {scheme}://{POOL}/health;",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _common_scheme_and_path(local: list[UpstreamConfig]) -> tuple[str, str]:
    """nginx proxies one pool with one scheme and path: every local upstream must agree."""
    shapes = {(urlsplit(u.url).scheme, urlsplit(u.url).path.rstrip("/")) for u in local}
    if len(shapes) != 1:
        raise ConfigError(
            "nginx needs every local upstream url to share one scheme and path "
            f"(found {sorted(shapes)}); use the gateway for mixed upstreams"
        )
    return shapes.pop()
