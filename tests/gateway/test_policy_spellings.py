"""Sensitive data is caught in any spelling the issue found reaching the cloud; look-alikes are not.

Table-driven: every row is a request body and the rule that must (or must not) fire. Ends with
the same bodies sent through a real gateway, asserting none of the sensitive ones reach the cloud.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from localseek.gateway.config import PolicyConfig
from localseek.gateway.policy import DataPolicy

from .conftest import chat

ID = "11010519491231002X"  # a valid checksum
POLICY = DataPolicy(PolicyConfig(keywords=("confidential",)))

SENSITIVE = [
    # (why, body, the rule that fires)
    ("id with spaces", chat("身份证 110105 19491231 002X"), "detector:prc_id"),
    ("id with dashes", chat("id 110105-19491231-002X ok"), "detector:prc_id"),
    ("full-width id", chat("证件号１１０１０５１９４９１２３１００２Ｘ"), "detector:prc_id"),
    ("full-width phone", chat("电话１３８１２３４５６７８"), "detector:cn_mobile"),
    ("phone with dots", chat("call 138.1234.5678"), "detector:cn_mobile"),
    ("phone with +86", chat("+86 138-1234-5678"), "detector:cn_mobile"),
    ("e-mail with (at)", chat("mail zhang.san(at)example.com"), "detector:email"),
    ("e-mail with [at] (dot)", chat("zhang [at] example (dot) com"), "detector:email"),
    ("full-width @", chat("zhang.san＠example.com"), "detector:email"),
    ("card with dots", chat("card 4111.1111.1111.1111"), "detector:bank_card"),
    (
        "card with zero-width spaces",
        chat("4111\u200b1111\u200b1111\u200b1111"),
        "detector:bank_card",
    ),
    ("spaced keyword", chat("this is C O N F I D E N T I A L"), "keyword"),
    ("dotted keyword", chat("c.o.n.f.i.d.e.n.t.i.a.l memo"), "keyword"),
    ("full-width keyword", chat("ＣＯＮＦＩＤＥＮＴＩＡＬ"), "keyword"),
    ("id as a json key", {**chat("hi"), "metadata": {ID: "x"}}, "detector:prc_id"),
    (
        "phone as a json number",
        {**chat("hi"), "metadata": {"p": 13812345678}},
        "detector:cn_mobile",
    ),
    ("plain id, still", chat(f"id:{ID}."), "detector:prc_id"),
]

LOOK_ALIKES = [
    ("wrong id checksum, spaced", chat("110105 19491231 0021")),
    ("a version number", chat("upgrade to 1.38.1234.5678")),
    ("twelve digits", chat("order 138123456789")),
    ("card failing luhn, dotted", chat("4111.1111.1111.1112")),
    ("a date and time", chat("2024-01-15 13:45:00")),
    ("at as a word", chat("meet zhang at example dot com")),
    ("an @ mention", chat("thanks @alice for the review")),
    ("a word containing the keyword's letters", chat("I am confident in this plan")),
    ("small numbers in json", {**chat("hi"), "temperature": 0.7, "max_tokens": 138}),
    ("phone-length key prefix", chat("the list is 1 3 8 1 2 3 4 5 6 7 8 9 0 1")),
]


@pytest.mark.parametrize(("why", "body", "rule"), SENSITIVE, ids=[s[0] for s in SENSITIVE])
def test_every_spelling_is_caught(why, body, rule):
    verdict = POLICY.classify(body, tenant_local_only=False, data_class=None)
    assert verdict.local_only and verdict.reason == rule, why


@pytest.mark.parametrize(("why", "body"), LOOK_ALIKES, ids=[s[0] for s in LOOK_ALIKES])
def test_look_alikes_are_not_sensitive(why, body):
    verdict = POLICY.classify(body, tenant_local_only=False, data_class=None)
    assert not verdict.local_only, (why, verdict.reason)


def test_scanning_a_large_body_is_linear():
    """A 1 MB prompt of one repeated character used to take quadratic time in the e-mail rule;
    bounded here by the test timeout of the suite, not by a timing assertion."""
    for text in ("x" * 1_000_000, "1 " * 500_000, "a@" * 500_000, "a." * 500_000):
        assert not POLICY.classify(chat(text), tenant_local_only=False, data_class=None).local_only


def test_no_spelling_reaches_the_cloud(fake, gateway):
    """All at once over a one-slot local replica: cloud-eligible requests overflow to the cloud
    (the public controls prove they would), the sensitive ones wait for the local slot."""
    local, cloud = fake("local", latency_s=0.1), fake("cloud")
    url = gateway(
        {
            "upstreams": [local.upstream(max_concurrency=1), cloud.upstream(kind="cloud")],
            "policy": {"keywords": ["confidential"]},
            "admission": {"max_queue_wait_s": 30},
            "cache": {"enabled": False},
        }
    )
    bodies = [body for _, body, _ in SENSITIVE] + [chat(f"public {i}") for i in range(4)]

    def send(body: dict) -> int:
        return httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        assert list(pool.map(send, bodies)) == [200] * len(bodies)
    sent_to_cloud = [r["body"]["messages"][0]["content"] for r in cloud.completions()]
    assert sent_to_cloud and all(text.startswith("public") for text in sent_to_cloud)
