"""Fill-in-the-middle: a completion's prompt + suffix laid out in the model's own FIM tokens."""

from __future__ import annotations

from dataclasses import dataclass

from localseek.weights.tokenizer import Tokenizer


@dataclass(frozen=True)
class FimFormat:
    """Prefix-suffix-middle order: `begin + prefix + hole + suffix + end`, then the middle."""

    name: str
    begin: str
    hole: str
    end: str

    def prompt(self, prefix: str, suffix: str) -> str:
        return f"{self.begin}{prefix}{self.hole}{suffix}{self.end}"


FIM_FORMATS = (
    # DeepSeek-Coder / DeepSeek-V2.5+ (what DeepSeek's /beta/completions suffix uses).
    FimFormat("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    # Qwen2.5-Coder, CodeGemma and others.
    FimFormat("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    # StarCoder / SantaCoder.
    FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
)


def fim_format(tokenizer: Tokenizer) -> FimFormat | None:
    """The first FIM format whose three tokens are all in the vocabulary, else None."""
    for fmt in FIM_FORMATS:
        if all(tokenizer.token_to_id(t) is not None for t in (fmt.begin, fmt.hole, fmt.end)):
            return fmt
    return None
