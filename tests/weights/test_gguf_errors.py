"""Bad GGUF files fail at open, with one error naming what is wrong, before weights load."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
from tiny_gguf import write_tiny_gguf
from tiny_models import make_tiny_model

from localseek.errors import ModelLoadError, UnsupportedModelError
from localseek.weights.gguf import open_gguf
from localseek.weights.gguf_file import GGUFFile
from localseek.weights.loader import open_model


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gguf")
    return write_tiny_gguf(make_tiny_model(tmp, "qwen2"), tmp / "good.gguf", "qwen2")


def _write(path, arch: str, tensors: dict, metadata: dict | None = None):
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        writer.add_uint32(key, value)
    for name, (array, qtype) in tensors.items():
        writer.add_tensor(name, array, raw_shape=array.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        open_model(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty.gguf"):
        open_gguf(path)


@pytest.mark.parametrize("keep", [3, 20, 200, 5000, 0.5, 0.999])
def test_truncated_file_is_named(tmp_path, good_file, keep):
    data = good_file.read_bytes()
    cut = keep if isinstance(keep, int) else int(len(data) * keep)
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="truncated|corrupt") as info:
        open_gguf(path)
    assert "cut.gguf" in str(info.value)


def test_corrupt_lengths_do_not_allocate(tmp_path, good_file):
    # A huge tensor count or string length must be refused, not attempted.
    data = bytearray(good_file.read_bytes())
    data[8:16] = struct.pack("<Q", 2**60)  # tensor count
    path = tmp_path / "huge.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupt"):
        GGUFFile(path)


def test_unsupported_version(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    data[4:8] = struct.pack("<I", 1)
    path = tmp_path / "v1.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedModelError, match="version 1"):
        open_gguf(path)


def test_unsupported_architecture_is_named(tmp_path):
    path = _write(
        tmp_path / "phi.gguf",
        "phi3",
        {"token_embd.weight": (np.zeros((4, 32), np.float32), None)},
    )
    with pytest.raises(UnsupportedModelError, match="'phi3'") as info:
        open_gguf(path)
    assert "gemma3" in str(info.value) and "qwen2" in str(info.value)  # lists what works


def test_unsupported_quantization_is_named(tmp_path):
    t = gguf.GGMLQuantizationType.IQ4_NL
    raw = np.zeros((4, gguf.GGML_QUANT_SIZES[t][1]), np.uint8)  # one 32-value block per row
    path = _write(
        tmp_path / "iq.gguf",
        "llama",
        {
            "token_embd.weight": (np.zeros((4, 32), np.float32), None),
            "blk.0.ffn_up.weight": (raw, t),
        },
    )
    with pytest.raises(UnsupportedModelError, match="IQ4_NL") as info:
        open_gguf(path)
    assert "blk.0.ffn_up.weight" in str(info.value) and "Q4_K" in str(info.value)


def test_unknown_tensor_is_named(tmp_path):
    path = _write(
        tmp_path / "odd.gguf",
        "qwen2",
        {
            "token_embd.weight": (np.zeros((4, 32), np.float32), None),
            "blk.0.mystery_gate.weight": (np.zeros((4, 32), np.float32), None),
        },
    )
    with pytest.raises(UnsupportedModelError, match="blk.0.mystery_gate.weight"):
        open_gguf(path)


def test_missing_hyperparameter_is_named(tmp_path):
    path = _write(
        tmp_path / "bare.gguf",
        "llama",
        {"token_embd.weight": (np.zeros((4, 32), np.float32), None)},
    )
    with pytest.raises(ModelLoadError, match="llama.embedding_length"):
        open_gguf(path)


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    """Token ids past the embedding's rows would index past the table (llama.cpp refuses it)."""
    model_dir = make_tiny_model(tmp_path, "qwen2")  # 512 embedding rows
    path = write_tiny_gguf(model_dir, tmp_path / "short.gguf", "qwen2", token_rows=600)
    with pytest.raises(ModelLoadError, match=r"600 tokens but token_embd.weight has 512 rows"):
        open_gguf(path)
