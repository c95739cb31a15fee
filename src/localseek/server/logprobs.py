"""Engine logprobs ({token_id: logprob} per token, chosen first) in OpenAI's two shapes."""

from __future__ import annotations

from localseek.server.protocol import (
    ChatLogprobs,
    CompletionLogprobs,
    TokenLogprob,
    TopLogprob,
)

# -inf (a token masked out by top-k/top-p) is not valid JSON; OpenAI reports -9999.0 instead.
_FLOOR = -9999.0


class LogprobFormatter:
    """Formats one request's logprobs; `top` is how many alternatives the client asked for."""

    def __init__(self, decode_token, top: int):
        self._decode_token = decode_token  # token id -> its text
        self._top = top
        self._texts: dict[int, str] = {}

    def token_text(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._decode_token(token_id)
            self._texts[token_id] = text
        return text

    def _top_entries(self, entry: dict[int, float]) -> list[tuple[int, float]]:
        ranked = sorted(entry.items(), key=lambda item: item[1], reverse=True)
        return [(t, max(lp, _FLOOR)) for t, lp in ranked[: self._top]]

    def chat(self, token_ids: list[int], logprobs: list[dict[int, float]]) -> ChatLogprobs:
        content = []
        for token_id, entry in zip(token_ids, logprobs, strict=False):
            text = self.token_text(token_id)
            content.append(
                TokenLogprob(
                    token=text,
                    logprob=_chosen(entry, token_id),
                    bytes=list(text.encode("utf-8")),
                    top_logprobs=[
                        TopLogprob(
                            token=self.token_text(t),
                            logprob=lp,
                            bytes=list(self.token_text(t).encode("utf-8")),
                        )
                        for t, lp in self._top_entries(entry)
                    ],
                )
            )
        return ChatLogprobs(content=content)

    def completion(
        self, token_ids: list[int], logprobs: list[dict[int, float]], offset: int
    ) -> CompletionLogprobs:
        """`offset`: characters of text before these tokens (for text_offset)."""
        out = CompletionLogprobs()
        for token_id, entry in zip(token_ids, logprobs, strict=False):
            text = self.token_text(token_id)
            out.tokens.append(text)
            out.token_logprobs.append(_chosen(entry, token_id))
            out.top_logprobs.append({self.token_text(t): lp for t, lp in self._top_entries(entry)})
            out.text_offset.append(offset)
            offset += len(text)
        return out


def _chosen(entry: dict[int, float], token_id: int) -> float:
    # The engine always includes the chosen token first.
    value = entry.get(token_id, next(iter(entry.values()), _FLOOR))
    return max(value, _FLOOR)
