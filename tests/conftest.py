"""Shared test setup: makes tests/helpers importable (tiny model and tokenizer factories)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

# Tests must never reach the Hugging Face Hub; the loaders' offline error path is tested instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# trio (a dependency of selenium) registers a hypothesis plugin that fails with a circular
# import when hypothesis is first imported under pytest's assertion rewriting (at the latest in
# hypothesis' own terminal-summary hook), which turns a green run into an internal error.
os.environ.setdefault("HYPOTHESIS_NO_PLUGINS", "1")


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    """A tiny-model server and a gateway over it, shared by the session (ops, ui, usage tests)."""
    from live_stack import shared_stack

    yield from shared_stack(tmp_path_factory.mktemp("live-stack"))
