"""From a validated request body to engine jobs: output limits, context checks, seeds per choice."""

from __future__ import annotations

import math
from dataclasses import dataclass

from localseek.errors import ContextLengthError, InvalidRequestError
from localseek.sampling_params import SamplingParams
from localseek.server.admission import Ticket
from localseek.server.config import ServerConfig
from localseek.server.fanout import Job
from localseek.server.protocol import _SamplingFields

_SEED_SPACE = 1 << 63
_MIN_TEMPERATURE = 1e-5
MAX_BATCH_PROMPTS = 64  # prompts in one /v1/completions request


@dataclass(frozen=True)
class Limits:
    """What bounds a request: the server's limits and the model's context."""

    config: ServerConfig
    max_model_len: int
    vocab_size: int  # token ids a request may name (logit_bias)


def resolve_max_tokens(
    requested: int | None,
    prompt_len: int,
    limits: Limits,
    *,
    default: int | None,
    param: str,
    prompt_param: str,
) -> int:
    """The output limit for one prompt, or a 400 naming both numbers when it cannot fit."""
    config, context = limits.config, limits.max_model_len
    room = context - prompt_len
    if room <= 0:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens but the model's context is {context} tokens; "
            "shorten the prompt",
            param=prompt_param,
        )
    if requested is None:
        candidates = [room, default, config.max_tokens_limit]
        return min(c for c in candidates if c is not None)
    if config.max_tokens_limit is not None and requested > config.max_tokens_limit:
        raise InvalidRequestError(
            f"{param}={requested} exceeds this server's limit of {config.max_tokens_limit}",
            param=param,
        )
    if requested > room:
        raise ContextLengthError(
            f"the prompt ({prompt_len} tokens) plus {param} ({requested}) is "
            f"{prompt_len + requested} tokens, more than the model's context of {context} tokens; "
            f"lower {param} to at most {room} or shorten the prompt",
            param=param,
        )
    return requested


def check_n(n: int, num_prompts: int, config: ServerConfig) -> None:
    if n > config.max_n:
        raise InvalidRequestError(f"n={n} exceeds this server's limit of {config.max_n}", param="n")
    if num_prompts > MAX_BATCH_PROMPTS:
        raise InvalidRequestError(
            f"{num_prompts} prompts in one request; at most {MAX_BATCH_PROMPTS}", param="prompt"
        )


def parse_logit_bias(
    raw: dict[str, float] | None, vocab_size: int
) -> tuple[tuple[int, float], ...]:
    """OpenAI's {"token id": bias} map as (id, bias) pairs; a 400 naming any bad id."""
    pairs = []
    for key, bias in (raw or {}).items():
        try:
            token_id = int(key)
        except ValueError:
            token_id = -1
        if not 0 <= token_id < vocab_size:
            raise InvalidRequestError(
                f"logit_bias: {key!r} is not a token id of this model (integers 0 to "
                f"{vocab_size - 1})",
                param=f"logit_bias.{key}",
            )
        pairs.append((token_id, bias))
    return tuple(pairs)


def sampling_params(
    body: _SamplingFields,
    *,
    max_tokens: int,
    logprobs: int | None,
    choice: int,
    logit_bias: tuple[tuple[int, float], ...] = (),
    grammar: str | None = None,
    grammar_after_token_id: int | None = None,
) -> SamplingParams:
    """SamplingParams for choice `choice` (seeded choices get seed + choice)."""
    seed = None if body.seed is None else (body.seed + choice) % _SEED_SPACE
    stop = body.stop if body.stop is not None else ()
    return SamplingParams(
        temperature=_temperature(body.temperature),
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=0 if body.top_k is None else body.top_k,
        min_p=0.0 if body.min_p is None else body.min_p,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        seed=seed,
        max_tokens=max_tokens,
        min_tokens=min(body.min_tokens, max_tokens),
        stop=stop,
        stop_token_ids=tuple(body.stop_token_ids or ()),
        ignore_eos=body.ignore_eos,
        include_stop_str_in_output=body.include_stop_str_in_output,
        logprobs=logprobs,
        skip_special_tokens=body.skip_special_tokens,
        logit_bias=logit_bias,
        grammar=grammar,
        grammar_after_token_id=grammar_after_token_id,
    )


def _temperature(value: float | None) -> float:
    if value is None:
        return 1.0  # OpenAI's default
    # Dividing logits by a vanishing temperature overflows to inf/NaN: treat it as greedy.
    return 0.0 if value < _MIN_TEMPERATURE else value


def build_jobs(
    body: _SamplingFields,
    prompts: list[list[int]],
    limits: Limits,
    *,
    requested_max_tokens: int | None,
    default_max_tokens: int | None,
    logprobs: int | None,
    param: str = "max_tokens",
    prompt_param: str = "prompt",
    grammar: str | None = None,
    grammar_after_token_id: int | None = None,
) -> list[Job]:
    """n jobs per prompt; choice index = prompt index * n + j, as OpenAI numbers them."""
    check_n(body.n, len(prompts), limits.config)
    logit_bias = parse_logit_bias(body.logit_bias, limits.vocab_size)
    jobs = []
    for p, prompt in enumerate(prompts):
        max_tokens = resolve_max_tokens(
            requested_max_tokens,
            len(prompt),
            limits,
            default=default_max_tokens,
            param=param,
            prompt_param=prompt_param,
        )
        for j in range(body.n):
            params = sampling_params(
                body,
                max_tokens=max_tokens,
                logprobs=logprobs,
                choice=j,
                logit_bias=logit_bias,
                grammar=grammar,
                grammar_after_token_id=grammar_after_token_id,
            )
            jobs.append(Job(p * body.n + j, prompt, params, max_tokens))
    return jobs


def make_ticket(
    request_id: str, jobs: list[Job], *, priority: int, timeout: float, now: float
) -> Ticket:
    deadline = now + timeout if math.isfinite(timeout) else math.inf
    return Ticket(
        request_id,
        cost=sum(job.cost for job in jobs),
        slots=len(jobs),
        priority=priority,
        deadline=deadline,
    )
