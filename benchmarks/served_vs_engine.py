"""Served vs in-process: what the HTTP server costs over the engine it wraps.

One workload (fixed seed: N prompts of random token ids, input lengths
uniform in [min_input, max_input], output lengths uniform in [min_output,
max_output], every request generating exactly its output length with
ignore_eos), run twice in the same process run, one after the other so the
two never share the CPU:

  in_process   modelbench.AsyncEngine.generate, all requests at once
  served       `modelbench serve` in a subprocess, driven over HTTP by
               streamed /v1/completions (token-id prompts), all at once

Per request it records the time to the first token (TTFT: first streamed
delta with text) and the end; it reports output throughput (generated
tokens / wall time from the first submission to the last token) and TTFT
statistics, and the served/in-process ratios. Prints JSON and writes it with
--out. Never asserts on time.

    python benchmarks/served_vs_engine.py --num-prompts 32 --out results.json

With --max-concurrency N it measures time per output token instead, N
requests at a time, alternating in-process and served targets round by
round (benchmarks/_served_latency.py):

    python benchmarks/served_vs_engine.py --max-concurrency 1 --rounds 8 \
        --baseline-python /tmp/before/python --out latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import httpx

from _report import emit, free_port  # benchmarks/_report.py (this folder is on sys.path)
from _served_latency import run_latency, worker_main
from modelbench import AsyncEngine, EngineArgs, SamplingParams


def workload(args: argparse.Namespace, vocab_size: int) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    requests = []
    for _ in range(args.num_prompts):
        n_in = rng.randint(args.min_input, args.max_input)
        n_out = rng.randint(args.min_output, args.max_output)
        # Avoid special tokens at the bottom of the vocabulary.
        requests.append(([rng.randrange(100, vocab_size) for _ in range(n_in)], n_out))
    return requests


def summarize(name: str, started: float, ended: float, ttfts: list[float], num_out: int) -> dict:
    ttfts_ms = sorted(t * 1000 for t in ttfts)
    return {
        "target": name,
        "seconds": ended - started,
        "output_tokens": num_out,
        "output_throughput": num_out / (ended - started),
        "mean_ttft_ms": statistics.fmean(ttfts_ms),
        "median_ttft_ms": statistics.median(ttfts_ms),
        "p99_ttft_ms": ttfts_ms[min(len(ttfts_ms) - 1, int(0.99 * len(ttfts_ms)))],
    }


async def run_in_process(engine: AsyncEngine, requests: list[tuple[list[int], int]]) -> dict:

    async def one(ids: list[int], n: int, started: float) -> tuple[float, int]:
        params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
        ttft, num = None, 0
        async for out in engine.generate(ids, params):
            if ttft is None and out.outputs[0].token_ids:
                ttft = time.perf_counter() - started
            num += len(out.outputs[0].token_ids)
        assert ttft is not None
        return ttft, num

    try:
        await asyncio.gather(
            *(one(ids, 2, time.perf_counter()) for ids, _ in requests[:2])
        )  # warm-up
        started = time.perf_counter()
        results = await asyncio.gather(*(one(ids, n, started) for ids, n in requests))
        ended = time.perf_counter()
    finally:
        engine.shutdown()
    return summarize(
        "in_process", started, ended, [t for t, _ in results], sum(n for _, n in results)
    )


def engine_args(args: argparse.Namespace) -> EngineArgs:
    return EngineArgs(
        model=args.model,
        max_model_len=args.max_input + args.max_output + 8,
        max_num_seqs=args.max_num_seqs,
        kv_cache_memory=args.kv_cache_memory,
    )


async def run_served(args: argparse.Namespace, requests: list[tuple[list[int], int]]) -> dict:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "modelbench",
        "serve",
        "--port",
        str(port),
        "--max-model-len",
        str(args.max_input + args.max_output + 8),
        "--max-num-seqs",
        str(args.max_num_seqs),
        "--served-model-name",
        "bench",
    ]
    if args.model:
        command += ["--model", args.model]
    if args.kv_cache_memory is not None:
        command += ["--kv-cache-memory", str(args.kv_cache_memory)]
    env = {**os.environ, "MODELBENCH_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(
            base_url=base, timeout=None, limits=httpx.Limits(max_connections=None)
        ) as http:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not become ready")
                await asyncio.sleep(0.2)

            async def one(ids: list[int], n: int, started: float) -> tuple[float, int]:
                body = {
                    "model": "bench",
                    "prompt": ids,
                    "max_tokens": n,
                    "temperature": 0.0,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                ttft, num = None, 0
                async with http.stream("POST", "/v1/completions", json=body) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if ttft is None and chunk["choices"] and chunk["choices"][0]["text"]:
                            ttft = time.perf_counter() - started
                        if chunk.get("usage"):
                            num = chunk["usage"]["completion_tokens"]
                assert ttft is not None
                return ttft, num

            await asyncio.gather(*(one(ids, 2, time.perf_counter()) for ids, _ in requests[:2]))
            started = time.perf_counter()
            results = await asyncio.gather(*(one(ids, n, started) for ids, n in requests))
            ended = time.perf_counter()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return summarize("served", started, ended, [t for t, _ in results], sum(n for _, n in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="folder or .gguf (default: SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--min-input", type=int, default=32)
    parser.add_argument("--max-input", type=int, default=256)
    parser.add_argument("--min-output", type=int, default=32)
    parser.add_argument("--max-output", type=int, default=128)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--kv-cache-memory", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the JSON here too")
    latency = parser.add_argument_group("time per output token (with --max-concurrency)")
    latency.add_argument("--max-concurrency", type=int, help="requests in flight per target")
    latency.add_argument("--input-len", type=int, default=256)
    latency.add_argument("--output-len", type=int, default=128)
    latency.add_argument("--rounds", type=int, default=8, help="rounds over all targets")
    latency.add_argument(
        "--baseline-python",
        help="also serve from this python/ folder (another checkout's), as served_baseline",
    )
    latency.add_argument(
        "--store-dir", default="/tmp/served_vs_engine", help="the servers' request logs"
    )
    latency.add_argument("--worker", choices=["llm", "async_engine"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        worker_main(args.worker, args)
        return
    if args.max_concurrency is not None:
        if args.max_concurrency < 1 or args.rounds < 1 or args.output_len < 2:
            parser.error("--max-concurrency and --rounds must be >= 1, --output-len >= 2")
        result = asyncio.run(run_latency(args))
        result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
        emit(result, args.out)
        return
    engine = AsyncEngine(engine_args(args))
    requests = workload(args, engine.config.vocab_size)
    in_process = asyncio.run(run_in_process(engine, requests))
    del engine  # its memory back before the server loads the model
    served = asyncio.run(run_served(args, requests))
    result = {
        "benchmark": "served_vs_engine",
        "model": args.model or "SmolLM2-135M-Instruct (default)",
        "workload": {
            k: getattr(args, k)
            for k in ("num_prompts", "min_input", "max_input", "min_output", "max_output", "seed")
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "in_process": in_process,
        "served": served,
        "served_over_in_process_throughput": served["output_throughput"]
        / in_process["output_throughput"],
        "served_minus_in_process_mean_ttft_ms": served["mean_ttft_ms"] - in_process["mean_ttft_ms"],
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
