"""Incremental detokenization: UTF-8-safe streaming text and exact stop-string cuts."""

from __future__ import annotations

from localseek.engine.stop_matcher import StopMatcher
from localseek.sampling_params import SamplingParams
from localseek.weights.tokenizer import Tokenizer

REPLACEMENT_CHAR = "\ufffd"
# Prompt tokens decoded in front of the output so the first output token gets the leading space
# (or not) it has in context; a few are enough for any decoder's context rules.
_PROMPT_CONTEXT_TOKENS = 5
# A window still ending in U+FFFD after this many tokens is garbage, not a character being
# completed (UTF-8 is at most 4 bytes): emit it so the per-token cost stays bounded.
_MAX_HELD_TOKENS = 32
# Drop decoded tokens from the front of the id buffer once this many are behind the window.
_COMPACT_AFTER = 64


class IncrementalDetokenizer:
    """Turns one request's output tokens into text, one token at a time.

    Text is produced by decoding a small window of tokens: `[prefix, read)` was already
    turned into text, `[prefix, end)` is decoded now, and the difference is new text (vLLM's
    prefix/read offsets). While the window's text ends with U+FFFD, a character is split across
    tokens and nothing is emitted. The concatenated output equals `tokenizer.decode(output_ids)`.

    Stop strings are matched incrementally (`StopMatcher`): each token costs O(window + its new
    characters x number of stop strings), never a rescan of the text or of a stop string.
    `new_text()` holds back a tail that might still become a stop string; `finish()` releases it.
    """

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, prompt_token_ids: list[int]):
        self._tokenizer = tokenizer
        self._skip_special = params.skip_special_tokens
        self._stops = StopMatcher(tuple(params.stop)) if params.stop else None
        self._include_stop = params.include_stop_str_in_output
        self._min_tokens = params.min_tokens
        self._ids = self._prompt_context(prompt_token_ids)
        self._prefix = 0  # window start: context for the decoder, already turned into text
        self._read = len(self._ids)  # tokens before this are already in `_decoded`
        self._decoded = ""  # all safe text so far, stop strings not yet cut
        self._stop_at: int | None = None  # cut position in `_decoded` once a stop matched
        self.stop_string: str | None = None
        self._returned = 0  # characters handed out by new_text()/finish()
        self._finished = False
        self.num_tokens = 0

    def _prompt_context(self, prompt_token_ids: list[int]) -> list[int]:
        context = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        # A prompt ending mid-character would swallow the output's first bytes: go without.
        if self._decode(context).endswith(REPLACEMENT_CHAR):
            return []
        return context

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special) if ids else ""

    # ---- feeding tokens -------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self._stop_at is not None

    def add(self, token_id: int) -> str | None:
        """Append one output token; returns the stop string if this token completed one.

        After a stop string matched, further tokens are ignored (the request is over).
        """
        if self.stopped or self._finished:
            return None
        self.num_tokens += 1
        self._ids.append(token_id)
        chunk = self._advance(force=len(self._ids) - self._read >= _MAX_HELD_TOKENS)
        return self._append(chunk)

    def _advance(self, *, force: bool) -> str:
        """New text of the window, or "" while it ends inside a character."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full_text = self._decode(self._ids[self._prefix :])
        grew = len(full_text) > len(prefix_text)
        if not force and (not grew or full_text.endswith(REPLACEMENT_CHAR)):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        if self._prefix >= _COMPACT_AFTER:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return full_text[len(prefix_text) :]

    def _append(self, chunk: str) -> str | None:
        if not chunk:
            return None
        self._decoded += chunk
        if self._stops is None:
            return None
        best = self._stops.feed(chunk)  # fed always: a stop may span the min_tokens boundary
        # Like the engine, a stop string only counts once min_tokens have been generated.
        if best is None or self.num_tokens <= self._min_tokens:
            return None
        at, stop = best
        self._stop_at = at + len(stop) if self._include_stop else at
        self.stop_string = stop
        return stop

    # ---- reading text ---------------------------------------------------------------------

    def _visible_end(self) -> int:
        if self._stop_at is not None:
            return self._stop_at
        if self._finished:
            return len(self._decoded)
        held = self._stops.held() if self._stops is not None else 0
        return len(self._decoded) - held

    @property
    def text(self) -> str:
        """All output text that is safe to show: no partial character, no (partial) stop string
        unless include_stop_str_in_output. Only grows; equals the concatenation of new_text()."""
        return self._decoded[: self._visible_end()]

    def new_text(self) -> str:
        """Text not returned by earlier new_text()/finish() calls (the streaming delta)."""
        end = self._visible_end()
        delta = self._decoded[self._returned : end]
        self._returned = max(self._returned, end)
        return delta

    def finish(self) -> str:
        """End of output: flush held-back bytes and stop-string prefixes; returns the last delta."""
        if not self._finished and not self.stopped and len(self._ids) > self._read:
            self._append(self._advance(force=True))
        self._finished = True
        return self.new_text()
