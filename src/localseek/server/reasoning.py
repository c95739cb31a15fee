"""Splits DeepSeek-R1 style `<think>…</think>` output into reasoning_content and content.

Works on streamed deltas: a tag may arrive split across deltas (`</thi` + `nk>`), so text that
could still be the start of a tag is held back until the next delta or `finish()`. Three forms
are handled: the model opens `<think>` itself; the chat template opened it, so the output only
closes it (`start_in_reasoning=True`); and a think block that never closes (all reasoning).
"""

from __future__ import annotations

import enum

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class _State(enum.Enum):
    START = "start"  # nothing decided: an opening tag may still come
    REASONING = "reasoning"
    CONTENT = "content"


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an open think block (R1's template does this)."""
    return prompt.rstrip().endswith(OPEN_TAG)


def template_has_reasoning(chat_template: str | None) -> bool:
    """Whether a chat template speaks the think-block convention at all."""
    return bool(chat_template) and OPEN_TAG in chat_template


class ReasoningSplitter:
    """Feed output deltas; get (reasoning_delta, content_delta) pairs back.

    Whitespace right after an opening or closing tag is dropped, as DeepSeek's API does.
    """

    def __init__(self, start_in_reasoning: bool):
        self._default = _State.REASONING if start_in_reasoning else _State.CONTENT
        self._state = _State.START
        self._buffer = ""
        self._skip_space = True

    @property
    def in_reasoning(self) -> bool:
        return self._state is _State.REASONING or (
            self._state is _State.START and self._default is _State.REASONING
        )

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning: list[str] = []
        content: list[str] = []
        while self._buffer:
            progressed = self._advance(reasoning, content)
            if not progressed:
                break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Flush what was held back at the end of the output."""
        rest, self._buffer = self._buffer, ""
        if self._skip_space:
            rest = rest.lstrip()
        if self._state is _State.START:
            self._state = self._default
        if self._state is _State.REASONING:
            return rest, ""
        return "", rest

    def _advance(self, reasoning: list[str], content: list[str]) -> bool:
        """Consume what can be decided from the buffer; False when it must wait for more."""
        if self._skip_space:
            stripped = self._buffer.lstrip()
            if not stripped:
                return False  # only whitespace so far: it may precede a tag
            self._buffer = stripped
            self._skip_space = False
        if self._state is _State.START:
            return self._decide_start()
        if self._state is _State.REASONING:
            return self._scan_reasoning(reasoning)
        content.append(self._buffer)
        self._buffer = ""
        return True

    def _decide_start(self) -> bool:
        if self._buffer.startswith(OPEN_TAG):
            self._buffer = self._buffer[len(OPEN_TAG) :]
            self._state = _State.REASONING
            self._skip_space = True
            return True
        if OPEN_TAG.startswith(self._buffer):
            return False  # "<thi": could still become the opening tag
        self._state = self._default
        return True

    def _scan_reasoning(self, reasoning: list[str]) -> bool:
        end = self._buffer.find(CLOSE_TAG)
        if end >= 0:
            reasoning.append(self._buffer[:end])
            self._buffer = self._buffer[end + len(CLOSE_TAG) :]
            self._state = _State.CONTENT
            self._skip_space = True
            return True
        keep = _partial_tag_suffix(self._buffer, CLOSE_TAG)
        emit = self._buffer[: len(self._buffer) - keep]
        if emit:
            reasoning.append(emit)
        self._buffer = self._buffer[len(self._buffer) - keep :]
        return False


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def split_reasoning(text: str, start_in_reasoning: bool) -> tuple[str, str]:
    """Whole-text split, identical to streaming the text through a splitter."""
    splitter = ReasoningSplitter(start_in_reasoning)
    reasoning, content = splitter.feed(text)
    tail_reasoning, tail_content = splitter.finish()
    return reasoning + tail_reasoning, content + tail_content
