"""POST /v1/compare and `modelbench compare` on a real `modelbench serve`
process that holds a local tiny model beside upstream names (real upstream
processes): one result per model in the order asked, partial results when
one fails or runs out of time, streamed events tagged with the model, one
record per model tied by the compare id, and 400s naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .test_gateway_faults import ROOT, Upstream, free_port, wait_until

CONFIG = """
[gateway]
first_byte_timeout_s = 30.0
max_compare_models = 3
"""


@pytest.fixture(scope="module")
def mixed(
    tiny_model_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Upstream, Upstream]]:
    """A server with the local model "tiny" and the upstream names "fast"
    (answers at once) and "stuck" (never answers)."""
    fast, stuck = Upstream("ok"), Upstream("hang")
    config = tmp_path_factory.mktemp("compare") / "gateway.toml"
    config.write_text(CONFIG)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelbench",
            "serve",
            "--port",
            str(port),
            "--log-format",
            "text",
            "--model",
            str(tiny_model_path("llama_gqa")),
            "--served-model-name",
            "tiny",
            "--upstream",
            f"fast={fast.base}",
            "--upstream",
            f"stuck={stuck.base}",
            "--models-file",
            str(config),
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(url + "/v1/models", timeout=2).status_code == 200, 120, "serve"
        )

        def loaded() -> bool:
            cards = httpx.get(url + "/v1/models", timeout=2).json()["data"]
            return any(c["id"] == "tiny:1" and c["state"] == "ready" for c in cards)

        wait_until(loaded, 120, "the local model")
        yield url, fast, stuck
    finally:
        server.terminate()
        server.wait(30)
        fast.stop()
        stuck.stop()


def compare(url: str, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/compare", json=body, timeout=60)


def test_one_result_per_model_in_order_with_partial_results(mixed) -> None:
    url, fast, _ = mixed
    r = compare(
        url,
        models=["fast", "tiny", "stuck"],
        max_tokens=4,
        temperature=0,
        deadline_s=2,
        messages=[{"role": "user", "content": "hello"}],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["compare_id"].startswith("cmp-")
    fast_r, tiny_r, stuck_r = body["results"]
    assert fast_r["model"] == "fast" and fast_r["output"]["content"] == f"answered by {fast.port}"
    assert fast_r["served_by"] == f"fast@{fast.base}" and fast_r["finish_reason"] == "stop"
    assert fast_r["ttft_ms"] > 0 and fast_r["latency_ms"] >= fast_r["ttft_ms"]
    assert tiny_r["model"] == "tiny:1" and tiny_r["output"]["role"] == "assistant"
    assert tiny_r["usage"]["completion_tokens"] == 4 and tiny_r["finish_reason"] == "length"
    assert (
        stuck_r["error"]["code"] == "deadline_exceeded"
        and "deadline_s" in stuck_r["error"]["message"]
    )
    # the deadline fires on the event loop's timer, which uvloop (libuv) keeps
    # in whole milliseconds: it can end up to 1 ms before time.monotonic() says
    assert 1999 <= stuck_r["latency_ms"] < 10_000

    def recorded() -> list[dict]:
        rows = httpx.get(url + "/v1/requests", timeout=5).json()["data"]
        return [row for row in rows if row.get("compare_id") == body["compare_id"]]

    wait_until(lambda: len(recorded()) == 3, 10, "three records")
    rows = {row["model_name"]: row for row in recorded()}
    assert rows["fast"]["upstream"] == fast.base and rows["fast"]["status"] == "succeeded"
    assert rows["tiny"]["completion_tokens"] == 4
    assert rows["stuck"]["status"] == "failed" and rows["stuck"]["http_status"] == 504


def test_a_completion_compare_streams_events_tagged_with_the_model(mixed) -> None:
    url, fast, _ = mixed
    r = compare(
        url, models=["tiny", "fast"], prompt="Once upon", max_tokens=3, temperature=0, stream=True
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    deltas = {"tiny": "", "fast": ""}
    results = {}
    for event in parsed:
        if "delta" in event:
            deltas[event["model"]] += event["delta"]
        else:
            results[event["model"]] = event["result"]
    assert deltas["fast"] == f"answered by {fast.port}" == results["fast"]["output"]
    assert (
        deltas["tiny"] == results["tiny"]["output"]
        and results["tiny"]["usage"]["completion_tokens"] == 3
    )
    assert {e["index"] for e in parsed if e["model"] == "fast"} == {1}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"models": [], "prompt": "a"}, "models must name at least one model"),
        ({"models": ["tiny", "fast", "stuck", "tiny"], "prompt": "a"}, "at most 3 per compare"),
        ({"models": ["tiny"]}, "send messages (chat) or prompt (completion)"),
        ({"models": ["tiny"], "prompt": "a", "temperature": "hot"}, "temperature"),
    ],
)
def test_bad_compares_are_400_naming_the_field(mixed, body: dict, message: str) -> None:
    url, _, _ = mixed
    r = compare(url, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert message in error["message"]
    assert error["param"] in ("models", "messages", "temperature")


def test_an_unknown_model_in_a_compare_is_404_as_on_every_route(mixed) -> None:
    url, _, _ = mixed
    r = compare(url, models=["tiny", "nope"], prompt="a")
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert "'nope' not served" in error["message"] and "tiny" in error["message"]
    assert error["param"] == "models" and error["code"] == "model_not_found"


def test_the_cli_prints_the_answers_side_by_side(mixed) -> None:
    url, fast, _ = mixed
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelbench",
            "compare",
            "--model",
            "tiny",
            "--model",
            "fast",
            "--max-tokens",
            "3",
            "--base-url",
            url,
            "hi",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "160", **__import__("os").environ},
    )
    assert done.returncode == 0, done.stderr
    assert "tiny:1" in done.stdout and f"fast@{fast.base}" in done.stdout
    assert f"answered by {fast.port}" in done.stdout and "latency" in done.stdout


def test_one_server_serves_local_and_remote_names(mixed) -> None:
    url, fast, _ = mixed
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    remote = httpx.post(url + "/v1/chat/completions", json={"model": "fast", **chat}, timeout=30)
    local = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", **chat}, timeout=30)
    assert (
        remote.status_code == 200
        and remote.headers["x-modelbench-served-by"] == f"fast@{fast.base}"
    )
    assert local.status_code == 200 and local.json()["model"] == "tiny:1"
    ids = [m["id"] for m in httpx.get(url + "/v1/models", timeout=5).json()["data"]]
    assert ids == ["tiny", "tiny:1", "fast", "stuck"]


def test_a_gateway_in_front_of_a_real_modelbench_server(mixed, tmp_path: Path) -> None:
    """The upstream is `modelbench serve` itself (strict about its input):
    chat, streamed chat and completions through a gateway process, with the
    openai client."""
    from openai import OpenAI

    from .test_gateway_faults import Gateway

    url, _, _ = mixed
    gw = Gateway(["--upstream", f"small={url}/v1#tiny"], None, tmp_path)
    try:
        client = OpenAI(base_url=gw.url + "/v1", api_key="unused")
        chat = client.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
        )
        assert (
            chat.model == "small" and chat.usage is not None and chat.usage.completion_tokens == 3
        )
        pieces = client.chat.completions.create(
            model="small",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            temperature=0,
            stream=True,
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        assert streamed == chat.choices[0].message.content
        text = client.completions.create(model="small", prompt="Once", max_tokens=2, temperature=0)
        assert text.usage is not None and text.usage.completion_tokens == 2
    finally:
        gw.stop()
