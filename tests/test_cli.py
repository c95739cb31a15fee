"""The command line: `localseek generate` end to end, and clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import make_tiny_model

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "localseek", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


def test_generate_prints_the_same_text_as_the_python_api(model_dir):
    from localseek import LLM, SamplingParams

    result = run_cli(
        "generate", str(model_dir), "Hello world", "--max-tokens", "6", "--dtype", "float32"
    )
    assert result.returncode == 0, result.stderr
    llm = LLM(str(model_dir), dtype="float32", show_progress=False)
    expected = llm.generate(["Hello world"], SamplingParams(temperature=0, max_tokens=6))[0]
    assert result.stdout.rstrip("\n") == expected.text


def test_generate_with_a_missing_model_fails_clearly():
    result = run_cli("generate", "./definitely-not-here", "hi")
    assert result.returncode == 1
    assert "definitely-not-here" in result.stderr
    assert "Traceback" not in result.stderr


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("localseek ")


def test_serve_help_documents_every_option_and_its_default():
    """`localseek serve --help`: each option has help text naming its default; choices listed."""
    from localseek.cli import build_parser

    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    text = serve.format_help()
    for action in serve._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{action.option_strings or action.dest} has no help text"
    assert "--default-max-tokens" in text and "(default: 4096)" in text
    assert "{auto,gguf,none,int8,int4}" in text and "{auto,float32,bfloat16,float16}" in text
    assert "{auto,cpu,cuda,cuda:N}" in text
    options = [a for a in serve._actions if a.option_strings and a.dest != "help"]
    helps = [serve._get_formatter()._get_help_string(a) for a in options]
    missing = [a.dest for a, h in zip(options, helps, strict=True) if "default" not in h]
    assert not missing, f"options whose help shows no default: {missing}"
