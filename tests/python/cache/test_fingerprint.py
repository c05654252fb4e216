"""What a request is cached under: every field that changes the output
changes the key, nothing else does, and tenants never share a partition
unless one shares."""

from __future__ import annotations

from typing import Any

import pytest

from modelbench.cache.fingerprint import build_query
from modelbench.cache.settings import CachePolicy

POLICY = CachePolicy(mode="exact")


def query(
    prompt: Any = "What is the capital of France?",
    params: dict[str, Any] | None = None,
    model: str = "m:1",
    fingerprint: str = "f",
    owner: str | None = "key_a",
    share: bool = False,
    messages: list[dict[str, Any]] | None = None,
):
    return build_query(
        model=model,
        model_fingerprint=fingerprint,
        endpoint="/v1/chat/completions" if messages else "/v1/completions",
        parameters={"temperature": 0, "max_tokens": 16} if params is None else params,
        prompt=None if messages else prompt,
        messages=messages,
        owner=owner,
        share=share,
        policy=POLICY,
    )


def exact(q) -> str:
    return q.exact_key(q.write_partition, q.prompt)


def test_the_same_request_has_the_same_key() -> None:
    assert exact(query()) == exact(query())


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", 0.5),
        ("max_tokens", 17),
        ("seed", 1),
        ("stop", ["\n"]),
        ("top_p", 0.9),
        ("n", 2),
        ("logit_bias", {"5": 1}),
        ("chat_template", "{{ messages }}"),
    ],
)
def test_a_parameter_that_changes_the_output_changes_the_key(field: str, value: Any) -> None:
    base = {"temperature": 0, "max_tokens": 16}
    assert exact(query(params={**base, field: value})) != exact(query(params=base))


@pytest.mark.parametrize(
    "field,value", [("stream", True), ("user", "u1"), ("priority", 5), ("stream_options", {})]
)
def test_fields_that_do_not_change_the_output_leave_the_key(field: str, value: Any) -> None:
    base = {"temperature": 0, "max_tokens": 16}
    assert exact(query(params={**base, field: value})) == exact(query(params=base))


def test_unset_fields_and_key_order_do_not_matter() -> None:
    a = query(params={"temperature": 0, "max_tokens": 16, "seed": None})
    b = query(params={"max_tokens": 16, "temperature": 0})
    assert exact(a) == exact(b)


def test_another_model_version_or_load_changes_the_key() -> None:
    assert exact(query(model="m:2")) != exact(query())
    assert exact(query(fingerprint="another path")) != exact(query())


def test_unicode_is_normalized_but_case_and_spaces_are_not() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert exact(query(prompt=composed)) == exact(query(prompt=decomposed))
    assert exact(query(prompt="Hello")) != exact(query(prompt="hello"))
    assert exact(query(prompt="Hello")) != exact(query(prompt="Hello "))


def test_token_prompts_and_prompt_lists_are_keyed_but_not_embedded() -> None:
    assert query(prompt=[1, 2, 3]).text is None
    assert exact(query(prompt=[1, 2, 3])) != exact(query(prompt=[1, 2, 4]))
    assert query(prompt=["a", "b"]).text is None
    assert query(prompt="  ").text is None


def test_a_chat_embeds_its_last_message_and_keys_the_rest() -> None:
    system = {"role": "system", "content": "Answer briefly."}
    a = query(messages=[system, {"role": "user", "content": "Hi there"}])
    b = query(messages=[{"role": "user", "content": "Hi there"}])
    assert a.text == b.text == "Hi there"
    assert a.scope != b.scope  # another conversation before it: another partition
    c = query(messages=[system, {"role": "user", "content": "Hello there"}])
    assert a.scope == c.scope and exact(a) != exact(c)


def test_tenants_have_their_own_partitions_unless_one_shares() -> None:
    a, b = query(owner="key_a"), query(owner="key_b")
    assert a.write_partition != b.write_partition
    assert exact(a) != exact(b)
    assert b.write_partition not in a.read_partitions
    sharing = query(owner="key_a", share=True)
    assert sharing.write_partition in b.read_partitions  # what a sharer keeps, others may read
    assert query(owner=None).write_partition != a.write_partition
