"""A `tokenizers` Tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.

Two vocabulary kinds occur in the files localseek runs:
- "gpt2": byte-level BPE with explicit merges (Qwen2, DeepSeek-R1-Distill, Llama 3);
- "llama": SentencePiece-style BPE with byte fallback and no merges (Gemma, Llama 2): merges
  are recovered from the vocabulary, ranked by the token each one builds.
Encoding matches transformers' GGUF conversion of the same file (tests compare them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from localseek.errors import ModelLoadError, UnsupportedModelError
from localseek.weights.gguf_file import GGUFFile
from localseek.weights.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5  # llama.cpp token types
_SPACE = "\u2581"  # SentencePiece's visible space

# tokenizer.ggml.pre -> the split regex the vocabulary's merges were learned with.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
}
# Llama 3 vocabularies take a pre-token found whole in the vocabulary before merging (as
# llama.cpp and Meta's tokenizer.json do).
_IGNORE_MERGES = frozenset({"llama-bpe", "llama3", "llama-v3"})
# tokenizer.ggml.pre values meaning GPT-2's own split.
_GPT2_PRE = frozenset({"default", "gpt-2", "gpt2"})

# Turn formats for files that carry no chat template (the Gemma 3 270M demo file is one).
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% set content = message['content'] if message['content'] is string "
    "else message['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join('\\n') %}"
    "{% if message['role'] == 'system' %}"
    "{% set ns.system = ns.system + content | trim + '\\n\\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + ns.system + content | trim + '<end_of_turn>\\n' }}"
    "{% set ns.system = '' %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_DEFAULT_TEMPLATES = {"gemma3": (GEMMA_TEMPLATE, "Gemma"), "qwen2": (CHATML_TEMPLATE, "ChatML")}
# Tokens that end a turn in an architecture's standard format, stopped on like EOS.
_TURN_END = {"gemma3": "<end_of_turn>", "qwen2": "<|im_end|>"}


def tokenizer_from_gguf(gguf: GGUFFile, arch: str) -> Tokenizer:
    """The file's tokenizer with its special tokens and chat template (or the arch default)."""
    md = gguf.metadata
    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelLoadError(f"GGUF file {gguf.path} has no tokenizer.ggml.tokens vocabulary")
    types = md.get("tokenizer.ggml.token_type")
    types = np.asarray(types if types is not None else [_NORMAL] * len(tokens))
    if kind == "gpt2":
        tok = _byte_level_bpe(gguf, tokens, types)
    elif kind == "llama":
        tok = _sentencepiece_bpe(gguf, arch, tokens)
    else:
        raise UnsupportedModelError(
            f"GGUF tokenizer model {kind!r} in {gguf.path} is not supported; "
            "supported: gpt2 (byte-level BPE), llama (SentencePiece BPE)"
        )
    _add_tokens(tok, tokens, types)
    return Tokenizer.from_tokenizers(
        tok,
        chat_template=_chat_template(gguf, arch),
        bos_token=_token_at(md, tokens, "bos_token_id"),
        eos_token=_token_at(md, tokens, "eos_token_id"),
        # SentencePiece vocabularies add BOS unless the file says otherwise (llama.cpp's rule).
        add_bos_token=bool(md.get("tokenizer.ggml.add_bos_token", kind == "llama")),
        add_eos_token=bool(md.get("tokenizer.ggml.add_eos_token", False)),
        eos_token_ids=_extra_eos_ids(md, tokens, arch),
        template_tokens={
            name: value
            for name, key in (("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id"))
            if (value := _token_at(md, tokens, key)) is not None
        },
    )


def _token_at(md: dict, tokens: Sequence[str], key: str) -> str | None:
    token_id = md.get(f"tokenizer.ggml.{key}")
    if token_id is None or not 0 <= int(token_id) < len(tokens):
        return None
    return tokens[int(token_id)]


def _extra_eos_ids(md: dict, tokens: Sequence[str], arch: str) -> list[int]:
    ids = [
        int(md[k])
        for k in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
        if k in md
    ]
    turn_end = _TURN_END.get(arch)
    if turn_end is not None and turn_end in tokens:
        ids.append(tokens.index(turn_end))
    return ids


def _chat_template(gguf: GGUFFile, arch: str) -> str | None:
    template = gguf.metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        return template
    default = _DEFAULT_TEMPLATES.get(arch)
    if default is None:
        logger.warning("%s carries no chat template; chat requests will be refused", gguf.path)
        return None
    logger.info(
        "%s carries no chat template; using the standard %s turn format", gguf.path, default[1]
    )
    return default[0]


def _add_tokens(tok: HFTokenizer, tokens: Sequence[str], types: np.ndarray) -> None:
    """Control tokens become special added tokens, user-defined ones plain added tokens.

    Both are matched whole in the input before the model splits text, as llama.cpp does; each
    keeps its file id because its text is already in the model's vocabulary.
    """
    vocab = tok.get_vocab(with_added_tokens=False)
    special = [
        AddedToken(t, normalized=False, special=True)
        for t, kind in zip(tokens, types.tolist(), strict=True)
        if kind == _CONTROL and t in vocab
    ]
    plain = [
        AddedToken(t, normalized=False, special=False)
        for t, kind in zip(tokens, types.tolist(), strict=True)
        if kind == _USER_DEFINED and t in vocab
    ]
    if special:
        tok.add_special_tokens(special)
    if plain:
        tok.add_tokens(plain)


# ---- byte-level BPE ("gpt2") -----------------------------------------------------------------


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (bytes as visible unicode characters)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _byte_level_bpe(gguf: GGUFFile, tokens: Sequence[str], types: np.ndarray) -> HFTokenizer:
    table = _byte_alphabet()
    alphabet = set(table.values())
    vocab: dict[str, int] = {}
    for index, (token, kind) in enumerate(zip(tokens, types.tolist(), strict=True)):
        # Added tokens keep their text (so they match whole); a normal token written outside
        # the byte alphabet is respelled byte by byte. Padding ("[PAD123]", unused) decodes to
        # nothing, as in llama.cpp, so it stays out of the vocabulary.
        if kind == _UNUSED:
            continue
        if kind in (_CONTROL, _USER_DEFINED) or set(token) <= alphabet:
            vocab[token] = index
        else:
            vocab["".join(table[b] for b in token.encode("utf-8"))] = index
    merges_raw = gguf.metadata.get("tokenizer.ggml.merges")
    if not isinstance(merges_raw, list):
        raise ModelLoadError(f"GGUF file {gguf.path} has a gpt2 vocabulary but no merges")
    merges = [tuple(m.split(" ", 1)) for m in merges_raw if " " in m]
    pre = str(gguf.metadata.get("tokenizer.ggml.pre", "default"))
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _IGNORE_MERGES))
    if pre in _SPLITS:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        if pre not in _GPT2_PRE:
            logger.warning(
                "GGUF pre-tokenizer %r is not known to localseek; splitting text as GPT-2 does",
                pre,
            )
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


# ---- SentencePiece-style BPE ("llama") -------------------------------------------------------


def _sentencepiece_bpe(gguf: GGUFFile, arch: str, tokens: Sequence[str]) -> HFTokenizer:
    md = gguf.metadata
    if arch == "gemma3":
        # Gemma files spell whitespace-run tokens with real spaces, while the text side turns
        # spaces into "▁"; and Gemma's scores do not follow its merge order, its token order does.
        tokens = [t.replace(" ", _SPACE) for t in tokens]
        rank = {t: float(-i) for i, t in enumerate(tokens)}
    else:
        scores = md.get("tokenizer.ggml.scores")
        if scores is None:
            raise ModelLoadError(f"GGUF file {gguf.path}: SentencePiece vocabulary has no scores")
        rank = dict(zip(tokens, np.asarray(scores, dtype=np.float64).tolist(), strict=True))
    vocab = {t: i for i, t in enumerate(tokens)}
    unk = _token_at(md, tokens, "unknown_token_id")
    tok = HFTokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges_from_vocab(vocab, rank),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    if arch == "gemma3":
        tok.normalizer = normalizers.Replace(" ", _SPACE)
        tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
        tok.decoder = decoders.Sequence(
            [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
        )
        return tok
    prefix = bool(md.get("tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=_SPACE, prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def merges_from_vocab(vocab: dict[str, int], rank: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a merge-less vocabulary.

    Every way to cut a token into two vocabulary tokens is a merge. Merges are ordered by the
    rank of the token they build (higher first), then longer left piece first, then by token
    order, so that BPE over them rebuilds high-ranked tokens first, as SentencePiece does.
    """
    items = list(rank.items())
    if len(set(rank.values())) == len(items):
        # Distinct ranks (Gemma: the token order): no two tokens tie, so emitting each token's
        # cuts, longest left piece first, in rank order is already the sorted order.
        items.sort(key=lambda item: -item[1])  # stable; a no-op when already in rank order
        merges = []
        for token, _ in items:
            for cut in range(len(token) - 1, 0, -1):
                left = token[:cut]
                if left in vocab:
                    right = token[cut:]
                    if right in vocab:
                        merges.append((left, right))
        return merges
    candidates: list[tuple[float, int, int, int, str, str]] = []
    for seq, (token, score) in enumerate(items):
        for cut in range(len(token) - 1, 0, -1):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                candidates.append((-score, -cut, cut - len(token), seq, left, right))
    candidates.sort()
    return [(left, right) for *_, left, right in candidates]
