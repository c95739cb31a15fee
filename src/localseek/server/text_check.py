"""require_text: a lone UTF-16 surrogate (JSON "\\ud800") is not text; the tokenizer must not see it."""

from __future__ import annotations

from localseek.errors import InvalidRequestError


def require_text(text: str, param: str) -> str:
    """`text`, or a 400 naming `param` if it holds a surrogate code point without its pair."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{param} contains a lone UTF-16 surrogate (U+{ord(exc.object[exc.start]):04X}), "
            "which is not text; send the character's full surrogate pair or UTF-8",
            param=param,
        ) from exc
    return text
