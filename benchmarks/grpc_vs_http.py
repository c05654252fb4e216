"""gRPC against HTTP on one served process: the same short calls both ways.

One `modelbench serve --grpc-port` process serves a language model (the
default model unless --model names one) and the example digit classifier
(trained here: modelbench.predict.example). Two calls, each made both ways:

  predict   one row of digits pixels: gRPC Predict, and POST /v1/predict
  generate  a short greedy completion (--max-tokens), streamed to its end:
            gRPC Generate, and POST /v1/completions with "stream": true

For each call and each --concurrency, --requests calls per protocol (after
--warmup), with that many callers in flight at once: a grpc.aio channel, or
an httpx.AsyncClient with as many keep-alive connections; protocols
alternate in --rounds rounds so that both see the same machine. Reported
per run: p50/p99/mean latency, requests/s, and the server process's CPU
time per call (from /proc/<pid>/stat: what the protocol costs the server,
whoever else shares the cores). Clients run in this process, on the same
cores as the server; httpx costs its caller more CPU than grpcio's C core,
so requests/s at high concurrency says something about the clients too.

Prints JSON and writes it with --out. Never asserts on time.

    python benchmarks/grpc_vs_http.py --out benchmarks/results/grpc_vs_http_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx

from _report import (  # benchmarks/_report.py (this folder is on sys.path)
    cpu_model,
    cpu_seconds,
    emit,
    free_port,
)
from modelbench.predict.example import digits, train_digits
from modelbench.server.grpc import inference_pb2 as pb
from modelbench.server.grpc.inference_pb2_grpc import InferenceStub

PROMPT = "The capital of France is"
LLM_NAME, DIGITS_NAME = "llm", "digits"
CallFn = Callable[[], Awaitable[None]]


def start_server(
    model: str | None, digits_path: Path, log: Path
) -> tuple[subprocess.Popen, str, str]:
    port, grpc_port = free_port(), free_port()
    llm = ["--model", model] if model else []
    if not model:  # the default model, named like the others
        from modelbench.models.default_model import default_model_path

        llm = ["--model", str(default_model_path())]
    args = [
        sys.executable, "-m", "modelbench", "serve", *llm, "--model", str(digits_path),
        "--served-model-name", LLM_NAME, "--served-model-name", DIGITS_NAME,
        "--port", str(port), "--grpc-port", str(grpc_port), "--max-model-len", "256",
        "--kv-cache-memory", str(64 * 1024 * 1024), "--log-level", "warning",
    ]  # fmt: skip
    env = {
        **os.environ,
        "MODELBENCH_RUN_WORKER": "false",
        "MODELBENCH_DATABASE_URL": f"sqlite:///{log.parent / 'store.db'}",
        "MODELBENCH_KEYS_FILE": str(log.parent / "keys.json"),  # none: open, on loopback
    }
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url, f"127.0.0.1:{grpc_port}"
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server was not ready in 300 s")
        time.sleep(0.1)


def calls(
    kind: str, stub: InferenceStub, http: httpx.AsyncClient, row: list[float], max_tokens: int
) -> dict[str, CallFn]:
    """The call ``kind`` made each way."""
    if kind == "predict":
        request = pb.PredictRequest(model=DIGITS_NAME, features=row)
        body = {"model": DIGITS_NAME, "features": row}

        async def grpc_predict() -> None:
            answer = await stub.Predict(request)
            assert len(answer.class_id) == 1

        async def http_predict() -> None:
            r = await http.post("/v1/predict", json=body)
            assert r.status_code == 200 and len(r.json()["class_id"]) == 1, r.text

        return {"grpc": grpc_predict, "http": http_predict}
    fields = {"model": LLM_NAME, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0}
    request_gen = pb.GenerateRequest(**fields)  # type: ignore[arg-type]

    async def grpc_generate() -> None:
        finished = [r async for r in stub.Generate(request_gen) if r.finish_reason]
        assert len(finished) == 1

    async def http_generate() -> None:
        async with http.stream("POST", "/v1/completions", json={**fields, "stream": True}) as r:
            assert r.status_code == 200
            lines = [line async for line in r.aiter_lines() if line]
        assert lines[-1] == "data: [DONE]"

    return {"grpc": grpc_generate, "http": http_generate}


async def run(call: CallFn, num_requests: int, concurrency: int) -> tuple[list[float], float]:
    """``num_requests`` calls, ``concurrency`` at a time: each latency (s) and the wall time."""
    latencies: list[float] = []
    left = num_requests

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def summary(latencies: list[float], wall_s: float, cpu_s: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "num_requests": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "requests_per_s": round(len(ms) / wall_s, 1),
        "server_cpu_ms_per_request": round(cpu_s * 1000 / len(ms), 3),
    }


async def measure(args: argparse.Namespace, pid: int, url: str, target: str) -> list[dict]:
    pixels, _ = digits()
    row = pixels[0].tolist()
    results = []
    limits = httpx.Limits(max_connections=max(args.concurrency), max_keepalive_connections=None)
    async with (
        grpc.aio.insecure_channel(target) as channel,
        httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http,
    ):
        stub = InferenceStub(channel)
        for kind in args.calls:
            ways = calls(kind, stub, http, row, args.max_tokens)
            for concurrency in args.concurrency:
                for call in ways.values():  # warm both: connections, caches
                    await run(call, args.warmup, concurrency)
                measured: dict[str, tuple[list[float], float, float]] = {
                    p: ([], 0.0, 0.0) for p in ways
                }
                per_round = max(1, args.requests // args.rounds)
                for _ in range(args.rounds):
                    for protocol, call in ways.items():
                        cpu0 = cpu_seconds(pid)
                        latencies, wall = await run(call, per_round, concurrency)
                        cpu = cpu_seconds(pid) - cpu0
                        got, total_wall, total_cpu = measured[protocol]
                        measured[protocol] = (got + latencies, total_wall + wall, total_cpu + cpu)
                for protocol, (latencies, wall, cpu) in measured.items():
                    results.append(
                        {"call": kind, "protocol": protocol, "concurrency": concurrency}
                        | summary(latencies, wall, cpu)
                    )
    return results


def compare(runs: list[dict]) -> list[dict]:
    """gRPC over HTTP per call and concurrency: > 1 means gRPC is faster."""
    out = []
    for run_ in runs:
        if run_["protocol"] != "grpc":
            continue
        http = next(
            r
            for r in runs
            if r["protocol"] == "http"
            and r["call"] == run_["call"]
            and r["concurrency"] == run_["concurrency"]
        )
        out.append(
            {
                "call": run_["call"],
                "concurrency": run_["concurrency"],
                "rps_grpc_over_http": round(run_["requests_per_s"] / http["requests_per_s"], 3),
                "p50_grpc_over_http": round(run_["p50_ms"] / http["p50_ms"], 3),
                "server_cpu_grpc_over_http": round(
                    run_["server_cpu_ms_per_request"] / http["server_cpu_ms_per_request"], 3
                )
                if http["server_cpu_ms_per_request"]
                else None,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="the language model (default: the default model)")
    parser.add_argument("--calls", nargs="+", default=["predict", "generate"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, default=400, help="per protocol, call, concurrency")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--digits-epochs", type=int, default=20)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_digits(root / "digits.pt", epochs=args.digits_epochs)
        proc, url, target = start_server(args.model, root / "digits.pt", root / "serve.log")
        try:
            runs = asyncio.run(measure(args, proc.pid, url, target))
        finally:
            proc.terminate()
            proc.wait(60)
    result = {
        "benchmark": "grpc_vs_http",
        "host": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "httpx": httpx.__version__,
        "model": args.model or "default (SmolLM2-135M-Instruct Q4_1)",
        "max_tokens": args.max_tokens,
        "clients": {"grpc": "grpc.aio channel", "http": "httpx.AsyncClient"},
        "runs": runs,
        "grpc_over_http": compare(runs),
    }
    emit(result, args.out)
    print(json.dumps(result["grpc_over_http"]), file=sys.stderr)


if __name__ == "__main__":
    main()
