"""Data-sensitivity policy: detectors, and sensitive data never reaching the cloud."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from localseek.gateway.config import PolicyConfig
from localseek.gateway.detectors import has_bank_card, has_cn_mobile, has_email, has_prc_id
from localseek.gateway.policy import DataPolicy

from .conftest import chat

SENSITIVE = {
    "prc_id": "我的身份证号是11010519491231002X，请帮我查询",
    "cn_mobile": "call me at 138 1234 5678 tomorrow",
    "bank_card": "card 4111-1111-1111-1111 exp 12/29",
    "email": "write to zhang.san@example.com.cn please",
    "pattern": "status of Project  Bluebird?",
    "keyword": "this memo is CONFIDENTIAL",
}
POLICY = {"patterns": [r"(?i)project\s+bluebird"], "keywords": ["confidential"]}


def test_prc_id_needs_a_valid_checksum():
    assert has_prc_id("11010519491231002X")
    assert has_prc_id("id:11010519491231002x.")
    assert not has_prc_id("110105194912310021")  # wrong check character
    assert not has_prc_id("110105194913310025")  # month 13


def test_mobile_numbers():
    assert has_cn_mobile("13812345678") and has_cn_mobile("+86 138-1234-5678")
    assert not has_cn_mobile("12812345678")  # no 12x prefix
    assert not has_cn_mobile("138123456789")  # 12 digits: not a mobile


def test_bank_cards_need_luhn():
    assert has_bank_card("4111 1111 1111 1111") and has_bank_card("6011000990139424")
    assert not has_bank_card("4111 1111 1111 1112")
    assert not has_bank_card("order 1234")


def test_email():
    assert has_email("a.b+c@mail.example.org")
    assert not has_email("user at example dot com")


def test_every_rule_and_message_role_is_checked():
    policy = DataPolicy(PolicyConfig(**{k: tuple(v) for k, v in POLICY.items()}))
    for label, text in SENSITIVE.items():
        verdict = policy.classify(chat(text), tenant_local_only=False, data_class=None)
        assert verdict.local_only and label in verdict.reason, label
    in_system = {
        "model": "m",
        "messages": [
            {"role": "system", "content": SENSITIVE["email"]},
            {"role": "user", "content": "summarise"},
        ],
    }
    assert policy.classify(in_system, tenant_local_only=False, data_class=None).local_only
    parts = chat([{"type": "text", "text": SENSITIVE["cn_mobile"]}])
    assert policy.classify(parts, tenant_local_only=False, data_class=None).local_only
    assert (
        policy.classify(chat("hello"), tenant_local_only=False, data_class="Sensitive").reason
        == "header"
    )
    assert (
        policy.classify(chat("hello"), tenant_local_only=True, data_class=None).reason == "tenant"
    )
    assert not policy.classify(
        chat("what is 2+2"), tenant_local_only=False, data_class=None
    ).local_only


def _cases() -> list[tuple[str, dict, dict]]:
    """(label, body, headers) for every way a request becomes local-only."""
    cases = [(label, chat(text), {}) for label, text in SENSITIVE.items()]
    cases.append(
        (
            "system",
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": SENSITIVE["prc_id"]},
                    {"role": "user", "content": "hi"},
                ],
            },
            {},
        )
    )
    cases.append(("header", chat("plain"), {"X-Data-Class": "sensitive"}))
    cases.append(("tenant", chat("plain"), {"Authorization": "Bearer sk-legal"}))
    return cases


def _config(local: dict, cloud: dict, **admission) -> dict:
    return {
        "upstreams": [local, {**cloud, "kind": "cloud"}],
        "policy": POLICY,
        "admission": {"max_queue_wait_s": 0.2, **admission},
        "tenants": [
            {"name": "legal", "api_keys": ["sk-legal"], "local_only": True},
            {"name": "app", "api_keys": ["sk-app"]},
        ],
    }


def _send_all(url: str, requests: list[tuple[dict, dict]], stream: bool = False) -> list[int]:
    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=20) as client:

            async def one(body: dict, headers: dict) -> int:
                headers = {"Authorization": "Bearer sk-app", **headers}
                r = await client.post(
                    url + "/v1/chat/completions", json={**body, "stream": stream}, headers=headers
                )
                await r.aread()
                return r.status_code

            return await asyncio.gather(*(one(b, h) for b, h in requests))

    return asyncio.run(run())


def test_sensitive_requests_never_overflow_to_the_cloud(fake, gateway):
    local = fake("local", latency_s=1.0)
    cloud = fake("cloud")
    url = gateway(_config(local.upstream(max_concurrency=1), cloud.upstream()))

    async def occupy_then_send() -> list[int]:
        async with httpx.AsyncClient(timeout=20) as client:
            busy = asyncio.create_task(
                client.post(
                    url + "/v1/chat/completions",
                    json=chat("plain"),
                    headers={"Authorization": "Bearer sk-app"},
                )
            )
            await asyncio.sleep(0.3)  # local is now full: its only slot is taken
            statuses = await asyncio.to_thread(
                _send_all, url, [(b, h) for _, b, h in _cases()] + [(chat("weather?"), {})]
            )
            await busy
            return statuses

    statuses = asyncio.run(occupy_then_send())
    assert statuses[-1] == 200
    sent_to_cloud = [r["body"]["messages"][-1]["content"] for r in cloud.completions()]
    assert sent_to_cloud == ["weather?"]  # only the non-sensitive one overflowed
    assert all(s in (200, 429) for s in statuses[:-1])


@pytest.mark.parametrize("stream", [False, True])
def test_sensitive_requests_never_fail_over_to_the_cloud(fake, gateway, stream):
    local = fake("local", fail_status=503)
    cloud = fake("cloud")
    url = gateway(_config(local.upstream(), cloud.upstream()))
    statuses = _send_all(url, [(b, h) for _, b, h in _cases()], stream=stream)
    assert statuses == [502] * len(_cases())
    assert cloud.completions() == []
    assert _send_all(url, [(chat("weather?"), {})], stream=stream) == [200]
    assert len(cloud.completions()) == 1


def test_sensitive_stream_cut_mid_answer_is_not_continued_in_the_cloud(fake, gateway):
    local = fake("local", die_after_chunks=3, answer_tokens=8)
    cloud = fake("cloud")
    url = gateway(_config(local.upstream(), cloud.upstream()))
    body = chat(SENSITIVE["bank_card"], stream=True)
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": "Bearer sk-app"},
        timeout=20,
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert '"stream_interrupted"' in lines[-2] and lines[-1] == "data: [DONE]"
    assert cloud.completions() == []
