"""DeepSeek's `thinking` request field -> the chat template's own reasoning switch."""

from __future__ import annotations

from localseek.errors import InvalidRequestError
from localseek.weights.tokenizer import template_variables

# DeepSeek-V3.1's template reads `thinking`; Qwen3's and many others read `enable_thinking`.
_SWITCHES = ("thinking", "enable_thinking")


def thinking_template_kwargs(enabled: bool, chat_template: str | None) -> dict[str, bool]:
    """Template variables that turn reasoning on or off, or a 400 when the template has none.

    A template without a switch either always reasons (it speaks `<think>`, like R1's) or never
    does; asking for the mode it is always in is fine, asking for the other one is refused
    rather than silently ignored.
    """
    source = chat_template or ""
    names = template_variables(source) if source else frozenset()
    switches = {name: enabled for name in _SWITCHES if name in names}
    if switches:
        return switches
    always = "<think>" in source
    if enabled == always:
        return {}
    mode = "always reasons" if always else "has no reasoning mode"
    raise InvalidRequestError(
        f"thinking.type={'enabled' if enabled else 'disabled'!r} cannot be honoured: the served "
        f"model's chat template {mode} and has no thinking switch",
        param="thinking",
    )
