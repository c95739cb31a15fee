"""SamplingParams: how one request's tokens are chosen and when it stops."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from localseek.errors import InvalidRequestError

# Every stop string is matched against every generated character: their total is bounded so
# one request cannot make the engine loop slow for everyone beside it.
MAX_STOP_BYTES = 16 * 1024


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings, validated on construction.

    temperature 0 means greedy. `seed` makes a sampled request reproducible whatever batch it
    lands in. `stop` strings are cut from the returned text; `stop_token_ids` end generation
    too (and are not included in the text). `logprobs` asks for the top-k log-probabilities
    of each generated token (0 = only the chosen token's). `logit_bias` (OpenAI's, -100..100
    per token id; a mapping is stored as sorted pairs) is added to the logits before sampling;
    -100 bans the token outright. `grammar` (an llguidance grammar, e.g. from
    `engine.grammar.json_schema_grammar`) constrains the output to the language it accepts;
    with `grammar_after_token_id` set, only the output after that token (say, R1's `</think>`:
    the reasoning stays free) is constrained.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16  # None: up to the model's context
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True
    n: int = 1
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str | None = None
    grammar_after_token_id: int | None = None

    def __post_init__(self) -> None:
        bias = self.logit_bias
        pairs = bias.items() if isinstance(bias, Mapping) else (bias or ())
        object.__setattr__(self, "logit_bias", tuple(sorted((int(t), float(b)) for t, b in pairs)))
        # Accept a single stop string or any iterable, but store tuples (frozen, hashable).
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is None:
            object.__setattr__(self, "stop", ())
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.stop_token_ids is None:
            object.__setattr__(self, "stop_token_ids", ())
        else:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        self._validate()

    def _validate(self) -> None:
        def bad(param: str, message: str) -> InvalidRequestError:
            return InvalidRequestError(message, param=param)

        if self.temperature < 0.0:
            raise bad("temperature", f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise bad("top_k", f"top_k must be >= 0 (or -1 to disable), got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", f"min_p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty <= 0.0:
            raise bad(
                "repetition_penalty",
                f"repetition_penalty must be > 0, got {self.repetition_penalty}",
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise bad(name, f"{name} must be in [-2, 2], got {value}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise bad("max_tokens", f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.min_tokens < 0:
            raise bad("min_tokens", f"min_tokens must be >= 0, got {self.min_tokens}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise bad("logprobs", f"logprobs must be in [0, 20], got {self.logprobs}")
        if self.n < 1:
            raise bad("n", f"n must be >= 1, got {self.n}")
        if any(not s for s in self.stop):
            raise bad("stop", "stop strings must be non-empty")
        for token_id, bias in self.logit_bias:
            if token_id < 0 or not -100.0 <= bias <= 100.0:
                raise bad(
                    "logit_bias",
                    f"logit_bias[{token_id}]={bias}: token ids must be >= 0 and biases in "
                    "[-100, 100]",
                )
        stop_bytes = sum(len(s.encode("utf-8", "surrogatepass")) for s in self.stop)
        if stop_bytes > MAX_STOP_BYTES:
            raise bad(
                "stop",
                f"stop strings total {stop_bytes} bytes; at most {MAX_STOP_BYTES} are allowed",
            )
        if self.seed is not None and not isinstance(self.seed, int):
            raise bad("seed", f"seed must be an integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
