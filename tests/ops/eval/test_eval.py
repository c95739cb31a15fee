"""`localseek eval` against real tiny servers: the same answers pass, another model regresses,
and the result lands as Prometheus gauges (a textfile, and a real Pushgateway when installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest
from live_stack import SERVED, free_port, serving, tiny_engine
from prometheus_client.parser import text_string_to_metric_families
from tiny_models import make_tiny_model

from localseek.cli import main

PROMPTS = ["Say something.", "Name a colour.", "Count to three.", "Describe rain."]


@pytest.fixture(scope="module")
def other_server(tmp_path_factory):
    """A second tiny model (different weights) served like the first: the 'candidate'."""
    from localseek.server.app import build_app
    from localseek.server.config import ServerConfig

    engine = tiny_engine(make_tiny_model(tmp_path_factory.mktemp("eval-other"), "llama", seed=7))
    try:
        with serving(build_app(engine, ServerConfig(served_model_name=SERVED))) as url:
            yield url
    finally:
        engine.shutdown()


@pytest.fixture(scope="module")
def golden(live, tmp_path_factory):
    """A golden set whose references are the baseline server's own greedy answers."""
    path = tmp_path_factory.mktemp("golden") / "golden.jsonl"
    lines = []
    for i, prompt in enumerate(PROMPTS):
        body = {
            "model": SERVED,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 12,
            "temperature": 0,
        }
        r = httpx.post(live.server_url + "/v1/chat/completions", json=body, timeout=60)
        answer = r.json()["choices"][0]["message"]["content"]
        check = "exact" if i % 2 else "text"
        lines.append(
            json.dumps(
                {
                    "id": f"p{i}",
                    "prompt": prompt,
                    "reference": answer,
                    "check": check,
                    "max_tokens": 12,
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def gauges(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_same_answers_through_the_gateway_pass(live, golden, tmp_path, capsys):
    textfile = tmp_path / "eval.prom"
    code = main(
        [
            "eval",
            live.server_url + "/v1",
            live.gateway_url + "/v1",
            "--golden",
            str(golden),
            "--textfile",
            str(textfile),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no regression" in out and "bleu" in out and "chrf" in out
    values = gauges(textfile.read_text())
    key = (
        "localseek_eval_score",
        (
            ("endpoint", "baseline"),
            ("golden", "golden.jsonl"),
            ("metric", "bleu"),
            ("model", SERVED),
        ),
    )
    assert values[key] == pytest.approx(100.0)
    assert values[("localseek_eval_regression", (("golden", "golden.jsonl"),))] == 0


def test_another_model_regresses_and_exits_non_zero(live, golden, other_server, capsys):
    code = main(["eval", live.server_url + "/v1", other_server + "/v1", "--golden", str(golden)])
    out = capsys.readouterr().out
    assert code == 1
    assert "REGRESSION" in out and "candidate worse than baseline" in out
    # A loose enough threshold lets the same comparison pass.
    assert (
        main(
            [
                "eval",
                live.server_url + "/v1",
                other_server + "/v1",
                "--golden",
                str(golden),
                "--threshold",
                "101",
            ]
        )
        == 0
    )


def test_an_unreachable_endpoint_is_a_clear_error(golden, capsys):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["eval", dead, "--golden", str(golden), "--baseline-model", SERVED]) == 1
    assert "answered none of the 4 prompts" in capsys.readouterr().err


PUSHGATEWAY = shutil.which("prometheus-pushgateway")


@pytest.mark.skipif(PUSHGATEWAY is None, reason="prometheus-pushgateway not installed")
def test_gauges_reach_a_real_pushgateway(live, golden, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/-/ready", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert (
            main(["eval", live.server_url + "/v1", "--golden", str(golden), "--pushgateway", url])
            == 0
        )
        values = gauges(httpx.get(url + "/metrics").text)
        pushed = [k for k in values if k[0] == "localseek_eval_score"]
        assert pushed and all(("job", "localseek_eval") in k[1] for k in pushed)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
