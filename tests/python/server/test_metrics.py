"""GET /metrics on a real server: every vLLM-named metric with its labels,
counters that equal the usage the responses reported, histograms observed
once per choice, gauges that read the engine, route templates as labels."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelbench.config import Settings
from modelbench.server import create_app

from .conftest import MODEL_NAME, RunningServer

ENGINE_METRICS = (
    "modelbench:num_requests_running",
    "modelbench:num_requests_waiting",
    "modelbench:kv_cache_usage_perc",
    "modelbench:time_to_first_token_seconds",
    "modelbench:inter_token_latency_seconds",
    "modelbench:e2e_request_latency_seconds",
    "modelbench:request_queue_time_seconds",
    "modelbench:prompt_tokens_total",
    "modelbench:generation_tokens_total",
    "modelbench:request_success_total",
)
LABELS = {"model_name": MODEL_NAME, "version": "1"}
# The per-request families say the protocol too.
REQUEST = {**LABELS, "protocol": "http"}

Samples = dict[tuple[str, frozenset], float]


def scrape(base_url: str) -> Samples:
    response = httpx.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def wait_idle(base_url: str) -> Samples:
    """The engine frees a request's blocks a step after its last output."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(base_url)
        busy = [
            n
            for n in (
                "modelbench:num_requests_running",
                "modelbench:num_requests_waiting",
                "modelbench:kv_cache_usage_perc",
            )
            if value(samples, n, **LABELS) != 0
        ]
        if not busy or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_generation_metrics_match_the_responses(server: RunningServer) -> None:
    url = server.base_url
    before = wait_idle(url)
    body = {
        "model": MODEL_NAME,
        "prompt": [5, 6, 7, 8],
        "max_tokens": 6,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    whole = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()
    text = whole["choices"][0]["text"]
    stop = next(text[i : i + 2] for i in range(1, len(text) - 1) if text[i : i + 2].strip())
    stopped = httpx.post(f"{url}/v1/completions", json={**body, "stop": [stop]}, timeout=60).json()
    assert stopped["choices"][0]["finish_reason"] == "stop"
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        timeout=60,
        json={
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 9,
            "n": 2,
            "seed": 1,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    streamed = httpx.Response(200, content=lines[-1][len("data: ") :]).json()
    too_long = httpx.post(f"{url}/v1/completions", json={**body, "prompt": [5] * 300})
    assert too_long.status_code == 400
    after = wait_idle(url)

    usages = [whole["usage"], stopped["usage"], streamed["usage"]]
    assert grew(before, after, "modelbench:prompt_tokens_total", **REQUEST) == sum(
        u["prompt_tokens"] for u in usages
    )
    assert grew(before, after, "modelbench:generation_tokens_total", **REQUEST) == sum(
        u["completion_tokens"] for u in usages
    )
    success = "modelbench:request_success_total"
    assert grew(before, after, success, **REQUEST, finished_reason="length") == 3  # 1 + 2 choices
    assert grew(before, after, success, **REQUEST, finished_reason="stop") == 1
    assert grew(before, after, success, **REQUEST, finished_reason="abort") == 0
    num_choices = 4
    for name in ("time_to_first_token", "e2e_request_latency", "request_queue_time"):
        full = f"modelbench:{name}_seconds"
        assert grew(before, after, f"{full}_count", **REQUEST) == num_choices, name
        assert grew(before, after, f"{full}_sum", **REQUEST) > 0, name
        assert grew(before, after, f"{full}_bucket", **REQUEST, le="+Inf") == num_choices, name
    # One gap per token after each choice's first (one token per engine step).
    num_generated = sum(u["completion_tokens"] for u in usages)
    assert (
        grew(before, after, "modelbench:inter_token_latency_seconds_count", **REQUEST)
        == num_generated - num_choices
    )
    ttft_sum = grew(before, after, "modelbench:time_to_first_token_seconds_sum", **REQUEST)
    e2e_sum = grew(before, after, "modelbench:e2e_request_latency_seconds_sum", **REQUEST)
    assert 0 < ttft_sum < e2e_sum

    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert (f"modelbench:{name}", frozenset(LABELS.items())) in after
        assert value(after, f"modelbench:{name}", **LABELS) == 0, name
    for metric in ENGINE_METRICS:  # histograms show as _bucket, _count and _sum samples
        assert any(name.startswith(metric) for name, _ in after), metric
    # Every engine series is labelled by model name and version.
    for name, labels in after:
        if name.startswith(ENGINE_METRICS) and not name.endswith("_created"):
            assert LABELS.items() <= dict(labels).items(), name


def test_http_metrics_use_route_templates(server: RunningServer) -> None:
    url = server.base_url
    before = scrape(url)
    for job_id in ("job-does-not-exist-1", "job-does-not-exist-2"):
        assert httpx.get(f"{url}/v1/jobs/{job_id}").status_code == 404
    assert httpx.get(f"{url}/no/such/path/123").status_code == 404
    assert httpx.get(f"{url}/v1/models").status_code == 200
    after = scrape(url)

    requests = "modelbench:http_requests_total"
    assert grew(before, after, requests, method="GET", route="/v1/jobs/{job_id}", status="404") == 2
    assert grew(before, after, requests, method="GET", route="unmatched", status="404") == 1
    assert grew(before, after, requests, method="GET", route="/v1/models", status="200") == 1
    assert (
        grew(
            before,
            after,
            "modelbench:http_request_duration_seconds_count",
            method="GET",
            route="/v1/jobs/{job_id}",
        )
        == 2
    )
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(r and ("job-does-not-exist" in r or "/no/such" in r) for r in routes)


def test_client_that_walks_away_counts_as_abort(server: RunningServer) -> None:
    url = server.base_url
    before = wait_idle(url)
    with httpx.stream(
        "POST",
        f"{url}/v1/completions",
        timeout=60,
        json={
            "model": MODEL_NAME,
            "prompt": "hello",
            "max_tokens": 200,
            "ignore_eos": True,
            "stream": True,
        },
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # leave after the first chunk
    deadline = time.monotonic() + 10
    success = "modelbench:request_success_total"
    while grew(before, scrape(url), success, **REQUEST, finished_reason="abort") < 1:
        assert time.monotonic() < deadline, "the abandoned stream was never counted"
        time.sleep(0.05)
    after = wait_idle(url)
    assert grew(before, after, success, **REQUEST, finished_reason="abort") == 1
    assert grew(before, after, "modelbench:e2e_request_latency_seconds_count", **REQUEST) == 0
    assert grew(before, after, "modelbench:time_to_first_token_seconds_count", **REQUEST) == 1


def test_each_app_has_its_own_registry(tiny_llama_path: Path) -> None:
    one = create_app(Settings(model=str(tiny_llama_path), run_worker=False))
    two = create_app(Settings(model=str(tiny_llama_path), run_worker=False))
    assert one.state.metrics.registry is not two.state.metrics.registry
    one.state.metrics.observe_http("GET", "/v1/models", 200, 0.01)
    assert b'route="/v1/models"' in one.state.metrics.exposition()
    assert b'route="/v1/models"' not in two.state.metrics.exposition()
