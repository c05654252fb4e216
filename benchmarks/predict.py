"""Tensor-model serving with the dynamic batcher on and off, same run.

A TorchScript classifier (an MLP, --hidden wide: at 4096, 72 MB of
float32 weights, so that one row costs what reading them costs, as for
most dense models on a CPU) is exported twice, once with dynamic batching
(max_batch_size 64, max_queue_delay_us --delay-us, the config's default
500) and once without (each request runs alone). At each concurrency (1, 16, 64
callers, each sending one-row requests back to back for --seconds) this
measures requests/s and p50/p99 latency, both ways:
  - "http": a real `modelbench serve --models-file` process serving both
    versions, called over HTTP (POST /v1/predict, aiohttp, one connection
    per caller) from this process;
  - "engine": PredictEngine in this process (the C++ TensorModel behind the
    batcher), the ceiling the server could reach.
Targets (issue 26), read at the HTTP level: at concurrency 64, batching on
serves at least 4x the requests/s of batching off; a lone caller's p99
with batching on is no worse than 2x the unbatched p50 at concurrency 1
(the queue delay must not cost a single user much). The p99 at 64 over
the unbatched p50 at 1 is printed too: on a 2-core host it is bound by
Little's law (64 callers / requests per second), not by the batcher.

Client and server share the host's cores: the figures name the host.
With a model far cheaper than a request's HTTP handling (--hidden 1024:
0.2 ms a row), both modes are bound by the HTTP layer (about 1,000
requests/s on 2 cores) and batching cannot show; run it to see.

Like `modelbench serve`, the process runs with libgomp's spin bounded
(GOMP_SPINCOUNT, server/openmp.py): otherwise the batcher's OpenMP worker
spins 4 ms after every batch on a core the callers need.

    python benchmarks/predict.py --out benchmarks/results/predict_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import torch

from _report import cpu_model, emit, free_port
from modelbench.predict import PredictEngine
from modelbench.server.openmp import run_with_bounded_spin

ROOT = Path(__file__).resolve().parent.parent
Call = Callable[[], Awaitable[None]]


def export(folder: Path, hidden: int, batching: dict) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(256, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
        torch.nn.Softmax(dim=1),
    ).eval()
    mode = "on" if batching["enabled"] else "off"
    (folder / mode).mkdir()
    path = folder / mode / "mlp.pt"
    torch.jit.script(net).save(str(path))
    config = {
        "inputs": [{"name": "features", "shape": [-1, 256]}],
        "outputs": [{"name": "probabilities", "shape": [-1, 10]}],
        "dynamic_batching": batching,
    }
    path.with_suffix(".json").write_text(json.dumps(config))
    return path


async def load(call: Call, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def serve(paths: dict[str, Path], tmp: Path) -> tuple[subprocess.Popen, str]:
    """`modelbench serve` with each path as the model named by its key."""
    models = tmp / "models.toml"
    models.write_text(
        "".join(f'[[models]]\nname = "{name}"\npath = "{p}"\n\n' for name, p in paths.items())
    )
    port = free_port()
    command = [sys.executable, "-m", "modelbench", "serve", "--models-file", str(models)]
    command += ["--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "MODELBENCH_DATABASE_URL": f"sqlite:///{tmp / 'store.db'}"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the server did not become ready")
        time.sleep(0.1)


async def measure_http(url: str, concurrency: list[int], seconds: float) -> dict:
    results: dict[str, dict[int, dict]] = {"on": {}, "off": {}}
    row = json.dumps({"features": torch.randn(256).tolist()})
    for mode in ("off", "on"):
        body = json.dumps({"model": f"mlp_{mode}", **json.loads(row)})
        for c in concurrency:
            connector = aiohttp.TCPConnector(limit=c, force_close=False)
            async with aiohttp.ClientSession(url, connector=connector) as http:

                async def call(http: aiohttp.ClientSession = http, body: str = body) -> None:
                    async with http.post(
                        "/v1/predict", data=body, headers={"content-type": "application/json"}
                    ) as r:
                        if r.status != 200:
                            raise RuntimeError(f"{r.status}: {await r.text()}")
                        await r.read()

                await load(call, c, 0.5)  # warm-up: connections open, pages touched
                results[mode][c] = await load(call, c, seconds)
    return results


def measure_engine(paths: dict[str, Path], concurrency: list[int], seconds: float) -> dict:
    results: dict[str, dict[int, dict]] = {"on": {}, "off": {}}
    row = {"features": torch.randn(1, 256)}
    for mode in ("off", "on"):
        engine = PredictEngine(paths[f"mlp_{mode}"])

        async def call(engine: PredictEngine = engine) -> None:
            await engine.predict(row)

        try:
            asyncio.run(load(call, 1, 0.5))  # warm-up
            for c in concurrency:
                before = engine.stats()
                results[mode][c] = asyncio.run(load(call, c, seconds))
                after = engine.stats()
                batches = after.num_batches - before.num_batches
                results[mode][c]["batches"] = batches
                results[mode][c]["rows_per_batch"] = (
                    after.num_batched_rows - before.num_batched_rows
                ) / max(batches, 1)
        finally:
            engine.shutdown()
    return results


def summary(results: dict, concurrency: list[int]) -> dict:
    top, one = max(concurrency), min(concurrency)
    on, off = results["on"], results["off"]
    return {
        f"throughput_on_over_off_at_{top}": on[top]["requests_per_s"] / off[top]["requests_per_s"],
        f"p99_on_at_{one}_over_p50_off_at_{one}": on[one]["p99_ms"] / off[one]["p50_ms"],
        f"p99_on_at_{top}_over_p50_off_at_{one}": on[top]["p99_ms"] / off[one]["p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--delay-us", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--via", nargs="+", choices=["http", "engine"], default=["http", "engine"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    run_with_bounded_spin()  # re-executes once with GOMP_SPINCOUNT set

    result: dict = {
        "benchmark": "predict",
        "host": cpu_model(),
        "cpus": os.cpu_count(),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "model": f"MLP 256-{args.hidden}-{args.hidden}-10, TorchScript, float32",
        "max_queue_delay_us": args.delay_us,
        "seconds_per_level": args.seconds,
        "targets": {
            "throughput_on_over_off_at_64": ">= 4",
            "p99_on_at_1_over_p50_off_at_1": "<= 2",
        },
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = {
            f"mlp_{mode}": export(
                tmp,
                args.hidden,
                {
                    "enabled": mode == "on",
                    "max_batch_size": 64,
                    "max_queue_delay_us": args.delay_us,
                    "max_queue_size": 4096,
                },
            )
            for mode in ("on", "off")
        }
        if "http" in args.via:
            process, url = serve(paths, tmp)
            try:
                http = asyncio.run(measure_http(url, args.concurrency, args.seconds))
            finally:
                process.terminate()
                process.wait(60)
            result["http"] = {"results": http, **summary(http, args.concurrency)}
        if "engine" in args.via:
            engine = measure_engine(paths, args.concurrency, args.seconds)
            result["engine"] = {"results": engine, **summary(engine, args.concurrency)}
    emit(result, args.out)


if __name__ == "__main__":
    main()
