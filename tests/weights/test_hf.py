"""HF directories and model paths: sharded safetensors, config checks, and clear loader errors."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import make_tiny_model

from localseek.errors import ModelLoadError
from localseek.weights.hf import HFWeights, safetensors_files
from localseek.weights.loader import open_model


def test_sharded_checkpoint_yields_the_same_tensors(tmp_path):
    single = make_tiny_model(tmp_path, "qwen2", seed=3)
    sharded = make_tiny_model(tmp_path, "qwen2", seed=3, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    files = safetensors_files(sharded)
    assert len(files) > 1
    weights = HFWeights(files)
    got = dict(weights)
    want = dict(HFWeights(safetensors_files(single)))
    assert weights.num_tensors == len(got) == len(want)
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


def test_open_model_on_a_directory(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama", max_shard_size="40KB")
    source = open_model(str(model_dir))
    assert source.config["architectures"] == ["LlamaForCausalLM"]
    assert source.format == "hf"
    names = [name for name, _ in source.weights()]
    assert len(names) == source.num_tensors
    assert "model.layers.1.self_attn.q_proj.weight" in names
    assert source.tokenizer.encode("hello world")


def test_missing_local_path_is_not_looked_up_on_the_hub(tmp_path):
    for path in (str(tmp_path / "nope"), "./no/such/model", "../model.gguf", "a/b/c"):
        with pytest.raises(ModelLoadError, match="no such file or directory"):
            open_model(path)


def test_hub_id_offline_gives_a_clear_error():
    # conftest sets HF_HUB_OFFLINE=1: nothing can be downloaded, nothing is cached.
    with pytest.raises(ModelLoadError, match=r"could not download localseek-test/absent-model-x"):
        open_model("localseek-test/absent-model-x")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        open_model(str(tmp_path))


def test_directory_with_only_pickle_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match=r"\*\.bin"):
        open_model(str(tmp_path))


def test_index_naming_a_missing_shard(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama", max_shard_size="40KB")
    shard = safetensors_files(model_dir)[-1]
    shard.unlink()
    with pytest.raises(ModelLoadError, match=shard.name):
        open_model(str(model_dir))


def test_corrupt_config_and_weights(tmp_path):
    model_dir = make_tiny_model(tmp_path, "llama")
    (model_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        open_model(str(model_dir))
    (model_dir / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="config.json"):
        open_model(str(model_dir))


def test_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("x")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        open_model(str(path))
