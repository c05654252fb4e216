"""Datasets: random lengths within the range ratio, ShareGPT parsing and
vLLM's filters, JSONL with per-line errors, the built-in prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelbench.bench.workload import (
    builtin_requests,
    jsonl_requests,
    random_requests,
    sharegpt_requests,
)
from modelbench.models.loader import load_tokenizer

from ..tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return load_tokenizer(build_tiny_model("llama_gqa", tmp_path_factory.mktemp("wl") / "llama"))


def test_random_lengths(tokenizer) -> None:
    requests = random_requests(tokenizer, 200, input_len=40, output_len=20, range_ratio=0.5, seed=3)
    outs = [r.output_len for r in requests]
    assert min(outs) >= 10 and max(outs) <= 30 and len(set(outs)) > 10
    assert all(r.prompt_len == len(tokenizer.encode(r.prompt)) for r in requests)
    same = random_requests(tokenizer, 200, input_len=40, output_len=20, range_ratio=0.5, seed=3)
    assert [r.prompt for r in same] == [r.prompt for r in requests]  # seeded
    fixed = random_requests(tokenizer, 5, input_len=40, output_len=20, range_ratio=0.0, seed=1)
    assert {r.output_len for r in fixed} == {20}
    with pytest.raises(ValueError, match="random_range_ratio"):
        random_requests(tokenizer, 1, 10, 10, 1.5, 0)


def test_sharegpt(tokenizer, tmp_path: Path) -> None:
    long_reply = "word " * 50
    data = [
        {
            "conversations": [
                {"from": "human", "value": "tell me a story about a cat please"},
                {"from": "gpt", "value": long_reply},
            ]
        },
        {
            "conversations": [
                {"from": "human", "value": "hi"},
                {"from": "gpt", "value": long_reply},
            ]
        },  # too short
        {"conversations": [{"from": "human", "value": "only a question here"}]},  # no reply
        {"id": "x"},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    requests = sharegpt_requests(tokenizer, path, num=10, seed=0)
    assert len(requests) == 1 and requests[0].prompt.startswith("tell me")
    assert requests[0].output_len == len(tokenizer.encode(long_reply))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not a readable ShareGPT"):
        sharegpt_requests(tokenizer, tmp_path / "bad.json", 1, 0)


def test_jsonl_and_builtin(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "one", "output_len": 7}\n\n{"prompt": "two"}\n')
    requests = jsonl_requests(tokenizer, path, num=5, output_len=9)
    assert [r.prompt for r in requests] == ["one", "two", "one", "two", "one"]
    assert [r.output_len for r in requests[:2]] == [7, 9]
    path.write_text('{"prompt": "one"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match="line 2"):
        jsonl_requests(tokenizer, path, 1, 9)
    builtin = builtin_requests(tokenizer, 60, output_len=12, seed=0)
    assert (
        len(builtin) == 60
        and len({r.prompt for r in builtin}) == 48
        and builtin[0].output_len == 12
    )
