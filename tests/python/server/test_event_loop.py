"""The event loop never blocks on the engine: while the engine is busy with
long generations and a huge prompt is being tokenized, /health still
answers within milliseconds (steps run in C++ threads with the GIL released;
tokenization runs off the loop)."""

from __future__ import annotations

import statistics
import threading
import time

import httpx

from .conftest import MAX_MODEL_LEN, MODEL_NAME, RunningServer

NUM_STREAMS = 16


def test_health_stays_fast_while_the_engine_works(server: RunningServer) -> None:
    errors: list[str] = []
    started = threading.Barrier(NUM_STREAMS + 2)

    def generate() -> None:
        body = {
            "model": MODEL_NAME,
            "prompt": "hello",
            "max_tokens": MAX_MODEL_LEN - 16,
            "n": 2,
            "temperature": 1.0,
            "ignore_eos": True,
        }
        started.wait()
        r = httpx.post(server.base_url + "/v1/completions", json=body, timeout=120)
        if r.status_code != 200:
            errors.append(r.text)

    def tokenize_a_huge_prompt() -> None:
        # About 1.5 MB of text: seconds of tokenizing, then a 400 (far past max_model_len).
        body = {
            "model": MODEL_NAME,
            "prompt": "the quick brown fox jumps " * 60_000,
            "max_tokens": 1,
        }
        started.wait()
        for _ in range(3):
            r = httpx.post(server.base_url + "/v1/completions", json=body, timeout=120)
            if r.status_code != 400 or r.json()["error"]["param"] != "prompt":
                errors.append(r.text)

    workers = [threading.Thread(target=generate) for _ in range(NUM_STREAMS)]
    workers.append(threading.Thread(target=tokenize_a_huge_prompt))
    for t in workers:
        t.start()
    started.wait()
    latencies, busy = [], 0
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        http.get("/health")  # the connection is open before timing starts
        while any(t.is_alive() for t in workers):
            t0 = time.perf_counter()
            assert http.get("/health").status_code == 200
            latencies.append(time.perf_counter() - t0)
            busy += server.engine.stats().scheduler.num_running > 0
            time.sleep(0.01)
    for t in workers:
        t.join()
    assert errors == []
    assert busy >= 20, f"the engine was busy for only {busy} of {len(latencies)} probes"
    median, worst = statistics.median(latencies), max(latencies)
    assert median < 0.050, f"median /health {median * 1e3:.1f} ms over {len(latencies)} probes"
    assert worst < 0.250, f"slowest /health {worst * 1e3:.1f} ms over {len(latencies)} probes"
