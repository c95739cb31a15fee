"""Request fields outside each endpoint's schema: rejected with a 400 naming them, or ignored.

Every field of OpenAI's and DeepSeek's request types is in exactly one of three sets: fields
the protocol models declare (implemented), fields refused here because honouring them is not
possible or not built (a 400 naming the field, unless the value means "the default"), and
fields accepted and ignored because ignoring them changes nothing the client can observe
(listed with the reason in docs/api.md). Any other field is a 400 naming it: a typo such as
`max_token` must not silently run with the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from localseek.errors import InvalidRequestError


@dataclass(frozen=True)
class Refused:
    """A field this server cannot honour; values in `allowed` (the default) pass."""

    reason: str
    allowed: tuple[Any, ...] = ()


@dataclass(frozen=True)
class FieldPolicy:
    """What one endpoint does with fields its protocol model does not declare."""

    endpoint: str
    refused: Mapping[str, Refused] = field(default_factory=dict)
    ignored: Mapping[str, str] = field(default_factory=dict)  # field -> why ignoring is harmless

    def __post_init__(self) -> None:
        both = set(self.refused) & set(self.ignored)
        assert not both, f"{self.endpoint}: fields both refused and ignored: {both}"
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))
        object.__setattr__(self, "ignored", MappingProxyType(dict(self.ignored)))

    def check(self, extras: Mapping[str, Any] | None) -> None:
        """400 for unknown fields (all named) and for refused fields set to a non-default."""
        extras = extras or {}
        unknown = sorted(k for k in extras if k not in self.refused and k not in self.ignored)
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise InvalidRequestError(
                f"unknown field(s) {names} for {self.endpoint}; see docs/api.md for the fields "
                "this server accepts",
                param=unknown[0],
            )
        for name, value in extras.items():
            refused = self.refused.get(name)
            if refused is None or value is None or value in refused.allowed:
                continue
            raise InvalidRequestError(
                f"{name} is not supported by this server: {refused.reason}", param=name
            )


_NO_USER_TRACKING = "identifies the end user to OpenAI's abuse monitoring; nothing here reads it"
_COMMON_IGNORED = {"user": _NO_USER_TRACKING}

CHAT_FIELDS = FieldPolicy(
    "/v1/chat/completions",
    refused={
        "functions": Refused("deprecated by OpenAI; send `tools` instead"),
        "function_call": Refused(
            "deprecated by OpenAI; send `tool_choice` instead", allowed=("none",)
        ),
        "audio": Refused("this server generates text only"),
        "modalities": Refused("this server generates text only", allowed=(["text"],)),
        "web_search_options": Refused("this server does not search the web"),
        "reasoning_effort": Refused(
            "the model's reasoning length cannot be set; DeepSeek's `thinking` field turns "
            "reasoning on or off where the chat template allows it"
        ),
        "verbosity": Refused("the answer's length can only be bounded, with max_tokens"),
        "moderation": Refused("this server runs no moderation"),
    },
    ignored={
        **_COMMON_IGNORED,
        "safety_identifier": _NO_USER_TRACKING,
        "metadata": "tags for OpenAI's stored completions; this server stores nothing",
        "store": "this server stores no completions (there is nothing to list or distill later)",
        "service_tier": "one tier: requests are ordered by `priority` / X-Priority instead",
        "prompt_cache_key": "the prefix cache is automatic and shared; no key is needed",
        "prompt_cache_retention": "cached prefixes stay until evicted (least recently used)",
        "prompt_cache_options": "the prefix cache is automatic; it has no per-request options",
        "prediction": "predicted outputs only speed OpenAI's decoding; the answer is the same",
    },
)

COMPLETION_FIELDS = FieldPolicy(
    "/v1/completions",
    refused={
        "best_of": Refused(
            "best_of > 1 is not supported; ask for n choices with logprobs and pick client-side",
            allowed=(1,),
        ),
    },
    ignored=_COMMON_IGNORED,
)

EMBEDDING_FIELDS = FieldPolicy("/v1/embeddings", ignored=_COMMON_IGNORED)
