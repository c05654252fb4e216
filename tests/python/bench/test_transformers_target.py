"""The transformers backend on a tiny random-weight Llama, one request at a
time and in static batches of 2: exact output lengths, one ITL sample per
gap, TTFT measured from the request's send time (so a later request's TTFT
includes its wait for the batches before it), arrivals and concurrency
honoured, and what it cannot honour refused."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from modelbench.bench.hf_target import TransformersTarget
from modelbench.bench.load_generator import run_workload
from modelbench.bench.session import BenchConfig
from modelbench.bench.workload import BenchRequest
from modelbench.models.loader import load_tokenizer
from modelbench.models.tokenizer import Tokenizer

from ..tiny_models import build_tiny_model

OUTPUT_LENS = [3, 6, 4, 5]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tokenizer]:
    path = build_tiny_model("llama_gqa", tmp_path_factory.mktemp("hf") / "llama")
    return path, load_tokenizer(str(path))


def requests_for(tokenizer: Tokenizer) -> list[BenchRequest]:
    prompts = [
        "the cat sat",
        "a longer prompt about the sea and the sky",
        "hello",
        "once upon a time",
    ]
    return [BenchRequest(p, len(tokenizer.encode(p)), n) for p, n in zip(prompts, OUTPUT_LENS)]


def run(
    target: TransformersTarget,
    requests: list[BenchRequest],
    arrivals: list[float],
    concurrency: int | None = None,
):
    return asyncio.run(run_workload(target, requests, arrivals, concurrency, progress=False))


@pytest.mark.parametrize("batch_size", [1, 2])
def test_lengths_gaps_and_ttft_from_the_send_time(
    tiny: tuple[Path, Tokenizer], batch_size: int
) -> None:
    path, tokenizer = tiny
    target = TransformersTarget(str(path), tokenizer, batch_size=batch_size)
    requests = requests_for(tokenizer)
    outcome = run(target, requests, [0.0] * len(requests))  # rate inf: all due at the start
    results = outcome.results
    assert [r.output_tokens for r in results] == OUTPUT_LENS
    assert all(r.success and len(r.itl) == r.output_tokens - 1 for r in results)
    for r, request in zip(results, requests):
        assert r.prompt_len == request.prompt_len and r.start_time == 0.0
        assert r.latency == pytest.approx(r.ttft + sum(r.itl))
    # A later batch's requests waited for the earlier ones, and that is in their TTFT.
    first_batch_end = max(r.latency for r in results[:batch_size])
    for r in results[batch_size:]:
        assert r.ttft > first_batch_end
    if batch_size == 2:  # batch-mates get their first token with the same step
        assert results[0].ttft == results[1].ttft
        assert results[2].ttft == results[3].ttft
    assert outcome.duration_s >= max(r.latency for r in results)


def test_arrivals_and_concurrency_are_honoured(tiny: tuple[Path, Tokenizer]) -> None:
    path, tokenizer = tiny
    target = TransformersTarget(str(path), tokenizer, batch_size=1)
    requests = requests_for(tokenizer)[:2]
    outcome = run(target, requests, [0.0, 0.5])  # the second arrives when generate is idle
    first, second = outcome.results
    assert second.start_time == 0.5 and first.latency < 0.5
    assert second.ttft < 0.5  # measured from its arrival, not the run's start
    assert outcome.duration_s >= 0.5 + second.latency

    # Concurrency 1: the second is sent when the first ends, and timed from then
    # (its TTFT, one prefill, is shorter than the first's six tokens).
    first_request, second_request = requests_for(tokenizer)[1:3]
    outcome = run(target, [first_request, second_request], [0.0, 0.0], concurrency=1)
    first, second = outcome.results
    assert (first.output_tokens, second.output_tokens) == (6, 4)
    assert second.start_time == pytest.approx(first.latency)
    assert second.ttft < first.latency


def test_what_it_cannot_honour_is_refused(tiny: tuple[Path, Tokenizer]) -> None:
    path, tokenizer = tiny
    target = TransformersTarget(str(path), tokenizer, batch_size=2)
    with pytest.raises(ValueError, match="max_concurrency must be >= batch_size \\(2\\)"):
        run(target, requests_for(tokenizer), [0.0] * 4, concurrency=1)
    config = BenchConfig(
        backend="transformers", batch_size=4, max_concurrency=2, request_rate=math.inf
    )
    with pytest.raises(ValueError, match="max_concurrency must be >= batch_size \\(4\\)"):
        config.validate()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        BenchConfig(backend="transformers", batch_size=0).validate()
