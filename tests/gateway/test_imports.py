"""The gateway stays light: importing it never imports torch, the engine or the server."""

from __future__ import annotations

import os
import subprocess
import sys

from .servers import SRC


def test_gateway_imports_no_torch_and_no_engine():
    code = (
        "import sys, localseek.gateway.main, localseek.gateway.app, localseek.ops.deploy.nginx\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('localseek.engine', 'localseek.models', 'localseek.server'))]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
