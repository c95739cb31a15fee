"""`localseek gateway`: load the config, build the app, serve it with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from localseek.gateway.app import create_app
from localseek.gateway.config import load_gateway_config
from localseek.gateway.front import GatewayFront

log = logging.getLogger(__name__)


def run_gateway(config_path: str, host: str | None, port: int | None) -> None:
    """Serve the gateway described by config_path; --host/--port override the file's."""
    import uvicorn

    config = load_gateway_config(config_path)
    # httpx logs every upstream request at INFO: noise, and measurable cost per request.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    # The front adds the admin API, model versions and reload (SIGHUP) around create_app.
    app = GatewayFront(config, create_app, Path(config_path))
    bind_host = host or config.host
    bind_port = port if port is not None else config.port
    names = ", ".join(
        f"{u.name} ({u.kind}{', backup' if u.backup else ''})" for u in config.upstreams
    )
    log.info("localseek gateway on http://%s:%d over %s", bind_host, bind_port, names)
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning", access_log=False)
