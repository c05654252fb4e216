"""How fast the benchmark client itself is: `modelbench bench`'s runner and
OpenAI target against a trivial streaming endpoint that answers at once (a
separate process), so any limit seen is the client's. The client must
sustain well over the request rates it is used to measure without its own
send lag distorting the timings.

Prints JSON (and writes it with --out): requests per second, and the send
lag (how late requests left against their schedule) at an offered rate.

    python benchmarks/bench_client_overhead.py --num-requests 5000 --out overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

from _report import emit, free_port  # benchmarks/_report.py (this folder is on sys.path)

TRIVIAL_STREAM = (
    b'data: {"choices":[{"index":0,"text":"x"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    b"data: [DONE]\n\n"
)


def serve(port: int) -> None:
    from aiohttp import web

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=TRIVIAL_STREAM, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def measure(url: str, num: int, concurrency: int | None, rate: float) -> dict:
    from modelbench.bench.load_generator import run_workload
    from modelbench.bench.metrics import summarize
    from modelbench.bench.targets import OpenAITarget
    from modelbench.bench.workload import BenchRequest, arrival_times

    target = OpenAITarget(url, "trivial")
    requests = [BenchRequest("hi", 1, 1)] * num
    try:
        outcome = await run_workload(
            target, requests, arrival_times(num, rate, 1.0, 0), concurrency, progress=False
        )
    finally:
        await target.close()
    m = summarize(outcome.results, outcome.duration_s)
    lags = sorted(outcome.send_lags_s)
    return {
        "num_requests": num,
        "offered_rate": rate if rate != float("inf") else "inf",
        "max_concurrency": concurrency,
        "completed": m["completed"],
        "failed": m["failed"],
        "requests_per_s": m["request_throughput"],
        "mean_ttft_ms": m["mean_ttft_ms"],
        "p99_send_lag_ms": lags[int(0.99 * (len(lags) - 1))] * 1000,
        "max_send_lag_ms": lags[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-requests", type=int, default=5000)
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument(
        "--offered-rate",
        type=float,
        default=1000.0,
        help="also run this rate (Poisson) and report the send lag",
    )
    parser.add_argument("--out")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    "the stand-in did not start"
                )
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        saturated = asyncio.run(measure(url, args.num_requests, args.max_concurrency, float("inf")))
        offered = asyncio.run(measure(url, args.num_requests, None, args.offered_rate))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "benchmark": "client_overhead",
        "cpus": os.cpu_count(),
        "saturated": saturated,
        "at_offered_rate": offered,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
