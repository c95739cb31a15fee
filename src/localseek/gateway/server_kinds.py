"""What each kind of upstream server exposes: where its health is, and how to read its load.

localseek serves `/load` (api/load.py); vLLM and llama.cpp's `llama-server --metrics` expose
running and waiting request gauges in Prometheus text at `/metrics`; Ollama and cloud APIs
expose no load, so the gateway routes on its own in-flight count for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from localseek.api.load import LoadReport

Load = tuple[int, int | None]  # (requests running + waiting, concurrent capacity if known)


def _localseek(response: httpx.Response) -> Load | None:
    try:
        report = LoadReport.read(response.json())
    except ValueError:
        return None
    return None if report is None else (report.queued, report.capacity)


def _gauges(*names: str) -> Callable[[httpx.Response], Load | None]:
    """Load as the sum of Prometheus gauges (over all their label sets); capacity unknown."""

    def parse(response: httpx.Response) -> Load | None:
        found: dict[str, float] = {}
        try:
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    if sample.name in names:
                        found[sample.name] = found.get(sample.name, 0.0) + sample.value
        except ValueError:
            return None
        if not found:
            return None  # not the server we were told it is (or metrics are off)
        return int(sum(found.values())), None

    return parse


def _busy_text(*phrases: str) -> Callable[[httpx.Response], bool]:
    """A 503 whose body says one of `phrases`: the server is full, not broken."""

    def busy(response: httpx.Response) -> bool:
        text = response.text.lower()
        return response.status_code == 503 and any(p in text for p in phrases)

    return busy


@dataclass(frozen=True)
class ServerKind:
    health_path: str  # answers 2xx when the server can take requests
    load_path: str | None  # None: no load signal, in-flight counts only
    parse_load: Callable[[httpx.Response], Load | None] | None = None
    # Beyond 429 and any 503 with Retry-After: the answers that mean "full, try later"
    busy: Callable[[httpx.Response], bool] | None = None

    def is_busy(self, response: httpx.Response) -> bool:
        """Whether a non-200 answer is a refusal for load (like 429), not a fault: the gateway
        tries another replica and pauses this one, and it does not count as unhealthy."""
        status = response.status_code
        if status == 429 or (status == 503 and "retry-after" in response.headers):
            return True
        return self.busy is not None and self.busy(response)


SERVER_KINDS: dict[str, ServerKind] = {
    "localseek": ServerKind("/health", "/load", _localseek),
    "vllm": ServerKind(
        "/health", "/metrics", _gauges("vllm:num_requests_running", "vllm:num_requests_waiting")
    ),
    # llama-server answers 503 "Loading model" to everything while its model loads (it listens
    # first); /metrics needs --metrics.
    "llama_cpp": ServerKind(
        "/health",
        "/metrics",
        _gauges("llamacpp:requests_processing", "llamacpp:requests_deferred"),
        busy=_busy_text("loading model"),
    ),
    # GET / answers "Ollama is running"; past OLLAMA_MAX_QUEUE it answers 503 "server busy"
    "ollama": ServerKind("/", None, busy=_busy_text("server busy", "maximum pending requests")),
    "openai": ServerKind("/health", None),  # any other OpenAI-compatible server
}
