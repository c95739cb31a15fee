"""Benchmark prompts: distinct token-id prompts of an exact length, from a model's own tokenizer."""

from __future__ import annotations


def make_prompts(tokenizer, n: int, length: int, tag: str = "") -> list[list[int]]:
    """n distinct prompts of exactly `length` ids (BOS + text), so no prefix is shared.

    `tag` keeps one level's prompts from being another's (servers keep prefix caches)."""
    prompts = []
    for i in range(n):
        text = f"Request {tag}{i}: " + "The quick brown fox jumps over the lazy dog. " * length
        prompts.append(tokenizer.encode(text)[:length])
    return prompts
