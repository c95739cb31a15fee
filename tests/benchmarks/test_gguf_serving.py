"""benchmarks/gguf_serving.py: real servers on loopback, exact output lengths, ratios, the table."""

from __future__ import annotations

import json
import os
import shutil

import gguf_serving
import pytest
from gguf_serving_report import markdown_table, summarize
from load_level import LevelRun
from server_process import Memory

LLAMA_SERVER = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")


def _contender(name: str, tok_s: float, ttft: float, rss: int) -> gguf_serving.Contender:
    c = gguf_serving.Contender(name, [name])
    # 8 tokens in 8 / tok_s seconds at C=2, one 32-token prompt answered after `ttft`.
    c.levels[2] = [LevelRun(8, 8 / tok_s, (ttft, ttft * 3), (4, 4))]
    c.prompt_runs = [LevelRun(1, ttft, (ttft,), (1,))]
    c.load_s = 3.0
    c.serve_peak, c.load_peak = Memory(rss, rss // 2), Memory(rss * 2, rss)
    return c


def test_ratios_and_table_compare_each_localseek_row_with_the_peer():
    settings = {
        "model": "/m/x.gguf",
        "file_bytes": 10**9,
        "threads": 2,
        "prompt_tokens": 8,
        "output_tokens": 4,
        "long_prompt_tokens": 32,
        "rounds": 1,
        "levels": [2],
    }
    host = {
        "cpu": {"model": "cpu", "logical_cores": 2, "flags": ["avx2"]},
        "localseek_commit": "abc",
        "llama_server_version": "v1",
        "load_average_start": [1.0],
        "load_average_end": [2.0],
    }
    contenders = [
        _contender("localseek", 20.0, 0.5, 3 * 10**9),
        _contender("llama.cpp", 10.0, 1.0, 10**9),
    ]
    results = summarize(contenders, [2], settings, host, reference="llama.cpp")
    ratio = results["ratios"]["localseek"]
    assert ratio["c2_tok_s"] == 2.0
    assert ratio["c2_ttft_p50_s"] == 0.5  # the median of (0.5, 1.5) against (1, 3)
    assert ratio["prompt_tok_s"] == 2.0  # 32 / 0.5 s against 32 / 1 s
    assert ratio["serve_peak_rss_gb"] == 3.0 and ratio["serve_peak_anon_gb"] == 3.0
    assert results["servers"]["localseek"]["levels"]["2"]["requests_short"] == 0
    table = markdown_table(results)
    assert "| C=2 output tok/s | 20 | 10 | 2.00x |" in table
    assert "| peak RSS serving, GB | 3 | 1 | 3.00x |" in table
    assert "flags: avx2" in table
    json.dumps(results)  # JSON-ready as it is


def test_a_missing_model_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gguf_serving.parse_args([str(tmp_path / "nope.gguf")])
    assert "no such GGUF file" in capsys.readouterr().err


def test_a_short_run_serves_exact_lengths_and_reports_every_figure(tiny_r1_gguf, tmp_path):
    """localseek serve (and llama-server, when built) on the tiny R1-shaped file."""
    out = tmp_path / "results.json"
    argv = [str(tiny_r1_gguf), "--levels", "1,2", "--output-tokens", "4", "--rounds", "1"]
    argv += ["--long-prompt", "48", "--prompt-tokens", "8", "--json", str(out)]
    argv += ["--llama-server", LLAMA_SERVER or ""]
    results = gguf_serving.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    expected = ["localseek"] + (["llama.cpp"] if LLAMA_SERVER else [])
    assert list(results["servers"]) == expected
    for server in results["servers"].values():
        level = server["levels"]["2"]
        assert level["output_tokens"] == 8 and level["requests_short"] == 0  # ignore_eos held
        assert level["tok_s"] > 0 and level["ttft_p50_s"] > 0
        assert server["prompt_tok_s"] > 0
        # A real process tree was sampled; file-backed pages are part of RSS, not of anon.
        assert server["serve_peak_rss_bytes"] > 50 * 2**20
        assert 0 < server["serve_peak_anon_bytes"] < server["serve_peak_rss_bytes"]
    if LLAMA_SERVER:
        assert results["ratios"]["localseek"]["c1_tok_s"] > 0
    assert results["settings"]["context_per_slot"] == 48 + 4 + 16
