"""A Llama-2-style SentencePiece GGUF vocabulary (merges recovered from scores) encodes as
transformers' GGUF conversion of the same file does."""

from __future__ import annotations

import gguf
import pytest

from localseek.weights.default_model import default_model_path
from localseek.weights.gguf_file import GGUFFile
from localseek.weights.gguf_tokenizer import tokenizer_from_gguf

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and\ttabs\nnew lines",
    "Ünïcödé, 中文 and emoji 🤖 fall back to bytes",
    "<bos>special<eos> text",
    "",
]


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory):
    """A 'llama' tokenizer GGUF built from part of the demo file's vocabulary and scores:
    its first 20k pieces (specials, bytes, frequent words) and its single characters."""
    demo = GGUFFile(default_model_path()).metadata
    tokens, scores = demo["tokenizer.ggml.tokens"], demo["tokenizer.ggml.scores"]
    types = demo["tokenizer.ggml.token_type"]
    keep = [*range(20000), *range(236743, len(tokens))]
    kept = [tokens[i] for i in keep]
    path = tmp_path_factory.mktemp("spm") / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(kept)
    writer.add_token_scores([float(scores[i]) for i in keep])
    writer.add_token_types([int(types[i]) for i in keep])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_sentencepiece_vocabulary_matches_transformers(spm_file):
    from transformers import AutoTokenizer

    ours = tokenizer_from_gguf(GGUFFile(spm_file), "llama")
    reference = AutoTokenizer.from_pretrained(str(spm_file.parent), gguf_file=spm_file.name)
    for text in TEXTS:
        for special in (True, False):
            ids = ours.encode(text, add_special_tokens=special)
            assert ids == reference.encode(text, add_special_tokens=special), text
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True)
    assert ours.bos_token_id == 2 and ours.eos_token_ids == frozenset({1})
