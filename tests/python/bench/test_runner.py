"""The runner and the OpenAI target against a stand-in server with known
delays (timings within tolerance), arrival statistics, concurrency, failures
counted with their errors, and the result JSON's keys."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from aiohttp import web

from modelbench.bench.load_generator import run_workload
from modelbench.bench.metrics import summarize
from modelbench.bench.targets import OpenAITarget
from modelbench.bench.workload import BenchRequest, arrival_times

FIRST_S, GAP_S, NUM_CHUNKS = 0.060, 0.025, 4


class StandIn:
    """Streams NUM_CHUNKS chunks (each followed by an empty one and an SSE
    comment): the first after FIRST_S, then one every GAP_S;
    prompts starting with "fail" get a 500. Counts requests in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["prompt"].startswith("fail"):
            return web.json_response({"error": {"message": "boom"}}, status=500)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for i in range(NUM_CHUNKS):
                await asyncio.sleep(FIRST_S if i == 0 else GAP_S)
                chunk = {"model": "stand-in:7", "choices": [{"index": 0, "text": f"t{i} "}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                # An empty chunk (role-only deltas, keep-alives) is no token: no ITL sample.
                empty = {"choices": [{"index": 0, "text": ""}]}
                await response.write(f"data: {json.dumps(empty)}\n\n: keep-alive\n\n".encode())
            usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": NUM_CHUNKS}}
            await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            return response
        finally:
            self.in_flight -= 1


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, StandIn]]:
    state = StandIn()
    app = web.Application()
    app.router.add_post("/v1/completions", state.completions)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", state
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def run(
    target: OpenAITarget,
    requests: list[BenchRequest],
    arrivals: list[float],
    concurrency: int | None = None,
):
    async def go():
        try:
            return await run_workload(target, requests, arrivals, concurrency, progress=False)
        finally:
            await target.close()

    return asyncio.run(go())


def test_timings_match_the_known_delays(stand_in: tuple[str, StandIn]) -> None:
    url, _ = stand_in
    requests = [BenchRequest("hello", 3, NUM_CHUNKS)] * 8
    target = OpenAITarget(url, "m")
    outcome = run(target, requests, [0.0] * 8)
    assert target.served_model == "stand-in:7"  # the server's own name for what answered
    m = summarize(outcome.results, outcome.duration_s)
    assert m["completed"] == 8 and m["total_output_tokens"] == 8 * NUM_CHUNKS  # from usage
    assert FIRST_S * 1000 <= m["mean_ttft_ms"] < FIRST_S * 1000 + 60
    assert GAP_S * 1000 * 0.8 <= m["median_itl_ms"] < GAP_S * 1000 + 40
    expected_e2e = (FIRST_S + (NUM_CHUNKS - 1) * GAP_S) * 1000
    assert expected_e2e <= m["mean_e2el_ms"] < expected_e2e + 80
    assert len(outcome.results[0].itl) == NUM_CHUNKS - 1
    assert m["mean_tpot_ms"] == pytest.approx(
        np.mean([(r.latency - r.ttft) / 3 for r in outcome.results]) * 1000
    )
    assert outcome.results[0].generated_text == "t0 t1 t2 t3 "


def test_concurrency_is_bounded_and_failures_are_counted(stand_in: tuple[str, StandIn]) -> None:
    url, state = stand_in
    state.max_in_flight = 0
    requests = [BenchRequest("fail now" if i % 5 == 0 else "ok", 3, NUM_CHUNKS) for i in range(20)]
    outcome = run(OpenAITarget(url, "m"), requests, [0.0] * 20, concurrency=3)
    m = summarize(outcome.results, outcome.duration_s)
    assert state.max_in_flight <= 3
    assert (m["completed"], m["failed"]) == (16, 4)
    assert all(e.startswith("HTTP 500") for e in m["errors"] if e)
    # 16 streams of ~135 ms, 3 at a time: at least 5 rounds
    assert outcome.duration_s >= 5 * (FIRST_S + 3 * GAP_S)


def test_requests_leave_on_schedule(stand_in: tuple[str, StandIn]) -> None:
    url, _ = stand_in
    arrivals = [0.0, 0.1, 0.2, 0.3]
    outcome = run(OpenAITarget(url, "m"), [BenchRequest("ok", 3, NUM_CHUNKS)] * 4, arrivals)
    starts = [r.start_time for r in outcome.results]
    assert all(abs(s - a) < 0.05 for s, a in zip(starts, arrivals)), starts
    assert max(outcome.send_lags_s) < 0.05


def test_poisson_and_gamma_arrivals() -> None:
    times = arrival_times(20000, rate=50.0, burstiness=1.0, seed=1)
    gaps = np.diff([0.0, *times])
    assert np.mean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert np.std(gaps) == pytest.approx(1 / 50, rel=0.05)  # exponential: std equals the mean
    bursty = np.diff([0.0, *arrival_times(20000, rate=50.0, burstiness=0.25, seed=1)])
    assert np.mean(bursty) == pytest.approx(1 / 50, rel=0.05)
    assert np.std(bursty) == pytest.approx(2 / 50, rel=0.08)  # gamma k=1/4: cv = 1/sqrt(k)
    assert arrival_times(3, math.inf, 1.0, 0) == [0.0, 0.0, 0.0]
    assert arrival_times(5, 10.0, 1.0, 7) == arrival_times(5, 10.0, 1.0, 7)  # seeded
    for rate, burst in [(0.0, 1.0), (1.0, 0.0)]:
        with pytest.raises(ValueError):
            arrival_times(1, rate, burst, 0)


VLLM_KEYS = {
    "duration",
    "completed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "generated_texts",
    "errors",
    *(
        f"{stat}_{m}_ms"
        for stat in ("mean", "median", "std", "p99")
        for m in ("ttft", "tpot", "itl", "e2el")
    ),
}


def test_result_json_has_vllms_keys(stand_in: tuple[str, StandIn]) -> None:
    url, _ = stand_in
    outcome = run(OpenAITarget(url, "m"), [BenchRequest("ok", 3, NUM_CHUNKS)] * 2, [0.0, 0.0])
    m = summarize(outcome.results, outcome.duration_s)
    assert VLLM_KEYS <= set(m)
    json.dumps(m)  # serializable as it is
