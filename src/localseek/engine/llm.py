"""LLM: the synchronous offline batch API over Engine."""

from __future__ import annotations

import itertools
from collections.abc import Sequence as Seq

from tqdm import tqdm

from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from localseek.engine.engine import Engine
from localseek.engine.outputs import RequestOutput
from localseek.errors import InvalidRequestError
from localseek.sampling_params import SamplingParams

Prompt = str | list[int]


class LLM:
    """Load a model once, then generate for many prompts with continuous batching.

    >>> llm = LLM("path/to/hf-dir-or.gguf")
    >>> llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=8))[0].text
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        device: str = "auto",
        max_model_len: int | None = None,
        quantization: str = "auto",
        gguf_activations: str = "q16",
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 2048,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        kv_cache_tokens: int | None = None,
        show_progress: bool = True,
    ):
        if model is None:
            from localseek.weights.default_model import default_model_path

            model = default_model_path()
        config = EngineConfig(
            model=ModelConfig(
                model=model,
                dtype=dtype,
                device=device,
                max_model_len=max_model_len,
                quantization=quantization,
                gguf_activations=gguf_activations,
            ),
            cache=CacheConfig(
                block_size=block_size,
                enable_prefix_caching=enable_prefix_caching,
                kv_cache_tokens=kv_cache_tokens,
            ),
            scheduler=SchedulerConfig(
                max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens
            ),
            show_progress=show_progress,
        )
        self._setup(Engine(config))

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLM:
        llm = cls.__new__(cls)
        llm._setup(Engine(config))
        return llm

    def _setup(self, engine: Engine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self._ids = itertools.count()

    def generate(
        self,
        prompts: Prompt | Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        priorities: Seq[int] | None = None,
        use_tqdm: bool | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs come back in prompt order.

        Every prompt is validated before any is queued, so a bad one changes nothing.
        """
        prompt_list = _as_prompt_list(prompts)
        params_list = _as_params_list(params, len(prompt_list))
        prio = list(priorities) if priorities is not None else [0] * len(prompt_list)
        if len(prio) != len(prompt_list):
            raise InvalidRequestError(
                f"got {len(prio)} priorities for {len(prompt_list)} prompts", param="priorities"
            )
        seqs = [
            self.engine.prepare(f"llm-{next(self._ids)}", p, sp, pr)
            for p, sp, pr in zip(prompt_list, params_list, prio)
        ]
        added = []
        try:
            for seq in seqs:
                self.engine.add_sequence(seq)
                added.append(seq.request_id)
        except Exception:
            self.engine.abort(added)
            raise
        return self._run(added, use_tqdm)

    def chat(
        self,
        conversations: Seq[list[dict]] | list[dict],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        add_generation_prompt: bool = True,
        use_tqdm: bool | None = None,
    ) -> list[RequestOutput]:
        """Render each conversation with the model's chat template, then generate."""
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]  # a single conversation
        prompts = []
        for messages in conversations:
            text = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=add_generation_prompt
            )
            # The template already carries BOS where the model wants it.
            prompts.append(self.tokenizer.encode(text, add_special_tokens=False))
        return self.generate(prompts, params, use_tqdm=use_tqdm)

    def _run(self, request_ids: list[str], use_tqdm: bool | None) -> list[RequestOutput]:
        show = self.engine.config.show_progress if use_tqdm is None else use_tqdm
        finals: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(request_ids), desc="Generating", unit="req", disable=not show)
        generated = 0
        try:
            while len(finals) < len(request_ids):
                for out in self.engine.step():
                    generated += len(out.delta_token_ids)
                    if out.finished:
                        finals[out.request_id] = out
                        bar.update(1)
                if bar.format_dict.get("elapsed"):
                    bar.set_postfix(tok_s=f"{generated / bar.format_dict['elapsed']:.1f}")
        except BaseException:
            self.engine.abort([r for r in request_ids if r not in finals])
            raise
        finally:
            bar.close()
        return [finals[r] for r in request_ids]


def _as_prompt_list(prompts: Prompt | Seq[Prompt]) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(t, int) for t in prompts):
        return [prompts]  # one prompt given as token ids
    if not prompts:
        raise InvalidRequestError("no prompts given", param="prompts")
    return prompts


def _as_params_list(
    params: SamplingParams | Seq[SamplingParams] | None, n: int
) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * n
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise InvalidRequestError(
            f"got {len(params)} sampling params for {n} prompts", param="sampling_params"
        )
    return params
