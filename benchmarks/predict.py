"""Tensor-model serving with the dynamic batcher on and off, same run.

A TorchScript classifier (an MLP, --hidden wide) served by PredictEngine
(the C++ TensorModel behind the dynamic batcher). At each concurrency (1,
16, 64 callers, each sending one-row requests back to back for
--seconds), requests/s and p50/p99 latency, with batching on
(max_batch_size 64, max_queue_delay_us --delay-us) and off (each request
runs alone). Targets (issue 26): at 64, batching on at least 4x the
requests/s of off; p99 on at 64 no worse than 2x off's p50 at 1.

This measures the engine in-process (the HTTP and gRPC layers over it are
not built yet).

    python benchmarks/predict.py --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _report import cpu_model, emit
from modelbench.predict import PredictEngine


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
    path = folder / f"mlp_{'on' if batching['enabled'] else 'off'}.pt"
    torch.jit.script(net).save(str(path))
    config = {
        "inputs": [{"name": "features", "shape": [-1, 256]}],
        "outputs": [{"name": "probabilities", "shape": [-1, 10]}],
        "dynamic_batching": batching,
    }
    path.with_suffix(".json").write_text(json.dumps(config))
    return path


async def load(engine: PredictEngine, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    row = torch.randn(1, 256)
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await engine.predict({"features": row})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--delay-us", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    results: dict[str, dict[int, dict]] = {"on": {}, "off": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("off", "on"):
            batching = {
                "enabled": mode == "on",
                "max_batch_size": 64,
                "max_queue_delay_us": args.delay_us,
                "max_queue_size": 4096,
            }
            engine = PredictEngine(export(Path(tmp), args.hidden, batching))
            try:
                asyncio.run(load(engine, 1, 0.5))  # warm-up
                for c in args.concurrency:
                    results[mode][c] = asyncio.run(load(engine, c, args.seconds))
                    results[mode][c]["batches"] = engine.stats().num_batches
            finally:
                engine.shutdown()
    top = max(args.concurrency)
    emit(
        {
            "benchmark": "predict",
            "host": cpu_model(),
            "model": f"MLP 256-{args.hidden}-{args.hidden}-10, TorchScript, float32",
            "max_queue_delay_us": args.delay_us,
            "results": results,
            f"throughput_ratio_at_{top}": results["on"][top]["requests_per_s"]
            / results["off"][top]["requests_per_s"],
            f"p99_on_at_{top}_over_p50_off_at_1": results["on"][top]["p99_ms"]
            / results["off"][min(args.concurrency)]["p50_ms"],
            "targets": {"throughput_ratio": 4.0, "p99_over_p50": 2.0},
        },
        args.out,
    )


if __name__ == "__main__":
    main()
