"""served_vs_engine.py --max-concurrency N: time per output token of the same
requests in process and served, one round at a time.

Each round sends N requests at once (fixed input and output lengths, EOS
ignored, greedy) to every target in turn, the order rotating from round to
round, so that a noisy host slows every target alike rather than the one
that happened to run during a build:

  llm                 LLM's engine stepped on the main thread of a worker
                      process (what LLM.generate does)
  async_engine        AsyncEngine.generate in a worker process, no HTTP
  served              `modelbench serve` from this tree, streamed
                      /v1/completions over loopback
  served_baseline     the same from another source tree (--baseline-python),
                      to compare a change against what it changes

A request's TPOT is (last token - first token) / (tokens - 1), as modelbench
bench reports it. For the servers, the voluntary context switches of their
busiest thread per generated token say how often an OpenMP thread went to
sleep in a step (server/openmp.py). Never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from _report import free_port  # benchmarks/_report.py (this folder is on sys.path)

BENCHMARK = Path(__file__).resolve().parent / "served_vs_engine.py"


def prompts(vocab_size: int, input_len: int, num: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    # Ids from 100 up: the bottom of a vocabulary holds the special tokens.
    return [[rng.randrange(100, vocab_size) for _ in range(input_len)] for _ in range(num)]


def tpot_ms(times: list[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1) * 1000


# ---- in-process targets: a worker process per target ------------------------


def worker_main(kind: str, args: argparse.Namespace) -> None:
    """Answer rounds on stdin (a seed per line) with the TPOTs as a JSON line."""
    from modelbench import LLM, AsyncEngine, EngineArgs, SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    engine_args = {"max_model_len": args.input_len + args.output_len + 8}
    if args.model:
        engine_args["model"] = args.model
    if kind == "llm":
        llm = LLM(**engine_args)
        engine = llm.engine  # stepped here as LLM.generate steps it
        print(json.dumps({"vocab_size": llm.config.vocab_size}), flush=True)
        for line in sys.stdin:
            batch = prompts(llm.config.vocab_size, args.input_len, args.max_concurrency, int(line))
            times: dict[str, list[float]] = {}
            for i, ids in enumerate(batch):
                engine.add_request(f"r{line.strip()}-{i}", ids, params.to_core(), 0)
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.new_token_ids:
                        times.setdefault(out.request_id, []).append(time.perf_counter())
            print(json.dumps({"tpot_ms": [tpot_ms(t) for t in times.values()]}), flush=True)
        return

    async def serve_rounds() -> None:
        engine = AsyncEngine(EngineArgs(**engine_args))
        loop = asyncio.get_running_loop()
        print(json.dumps({"vocab_size": engine.config.vocab_size}), flush=True)

        async def one(ids: list[int]) -> float:
            times = []
            async for out in engine.generate(ids, params):
                if out.outputs[0].token_ids:
                    times.append(time.perf_counter())
            return tpot_ms(times)

        while line := await loop.run_in_executor(None, sys.stdin.readline):
            vocab = engine.config.vocab_size
            batch = prompts(vocab, args.input_len, args.max_concurrency, int(line))
            tpots = await asyncio.gather(*(one(ids) for ids in batch))
            print(json.dumps({"tpot_ms": list(tpots)}), flush=True)
        engine.shutdown()

    asyncio.run(serve_rounds())


class InProcess:
    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        command = [sys.executable, str(BENCHMARK), "--worker", name, *worker_flags(args)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.vocab_size = json.loads(self.process.stdout.readline())["vocab_size"]

    async def round(self, seed: int) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{seed}\n")
        self.process.stdin.flush()
        line = await asyncio.to_thread(self.process.stdout.readline)
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=120)


def worker_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--input-len", str(args.input_len), "--output-len", str(args.output_len)]
    flags += ["--max-concurrency", str(args.max_concurrency)]
    return flags + (["--model", args.model] if args.model else [])


# ---- served targets -----------------------------------------------------------


def thread_sleeps(pid: int) -> dict[str, int]:
    """Voluntary context switches of each of the process's threads so far."""
    sleeps = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        sleeps[tid] = int(line.split()[1])
        except OSError:
            pass  # the thread ended
    return sleeps


class Served:
    def __init__(self, name: str, args: argparse.Namespace, python_path: str | None) -> None:
        self.name = name
        self.port = free_port()
        self.output_len = args.output_len
        self.vocab_size = 0
        command = [sys.executable, "-m", "modelbench", "serve", "--port", str(self.port)]
        command += ["--max-model-len", str(args.input_len + args.output_len + 8)]
        command += ["--served-model-name", "bench"]
        command += ["--database-url", f"sqlite:///{args.store_dir}/{name}.db"]
        if args.model:
            command += ["--model", args.model]
        env = {**os.environ, "MODELBENCH_LOG_LEVEL": "WARNING"}
        if python_path:  # the baseline's python/ first; the compiled module stays this tree's
            env["PYTHONPATH"] = os.pathsep.join([python_path, env.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=None,
            limits=httpx.Limits(max_connections=None),
        )

    async def ready(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        deadline = time.monotonic() + 300
        while True:
            try:
                if (await self.http.get("/ready")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the server did not become ready")
            await asyncio.sleep(0.2)

    async def one(self, ids: list[int]) -> float:
        body = {
            "model": "bench",
            "prompt": ids,
            "max_tokens": self.output_len,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
        }
        times = []
        async with self.http.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    times.append(time.perf_counter())
        return tpot_ms(times)

    async def round(self, seed: int, num: int, input_len: int) -> dict:
        before = thread_sleeps(self.process.pid)
        batch = prompts(self.vocab_size, input_len, num, seed)
        tpots = await asyncio.gather(*(self.one(ids) for ids in batch))
        after = thread_sleeps(self.process.pid)
        busiest = max(after[t] - before.get(t, 0) for t in after)
        return {"tpot_ms": list(tpots), "sleeps_per_token": busiest / (num * self.output_len)}

    async def close(self) -> None:
        await self.http.aclose()
        self.process.terminate()
        self.process.wait(timeout=60)


# ---- the run --------------------------------------------------------------------


def summary(rounds: list[dict]) -> dict:
    """Median and best over the rounds of each round's median TPOT."""
    per_round = [statistics.median(r["tpot_ms"]) for r in rounds]
    out = {
        "median_tpot_ms": statistics.median(per_round),
        "min_tpot_ms": min(per_round),
        "round_median_tpot_ms": per_round,
    }
    if "sleeps_per_token" in rounds[0]:
        out["sleeps_per_token"] = statistics.median(r["sleeps_per_token"] for r in rounds)
    return out


async def run_latency(args: argparse.Namespace) -> dict:
    os.makedirs(args.store_dir, exist_ok=True)
    in_process = [InProcess(name, args) for name in ("llm", "async_engine")]
    vocab_size = in_process[0].vocab_size
    served = [Served("served", args, None)]
    if args.baseline_python:
        served.append(Served("served_baseline", args, args.baseline_python))
    targets: list[InProcess | Served] = [*in_process, *served]
    rounds: dict[str, list[dict]] = {t.name: [] for t in targets}
    try:
        for target in in_process:
            await target.round(seed=-1)  # warm-up
        for target in served:
            await target.ready(vocab_size)
            await target.round(seed=-1, num=1, input_len=args.input_len)
        order = list(targets)
        for r in range(args.rounds):
            for target in order:
                if isinstance(target, Served):
                    result = await target.round(r, args.max_concurrency, args.input_len)
                else:
                    result = await target.round(r)
                result["load_average"] = os.getloadavg()[0]
                rounds[target.name].append(result)
                print(target.name, r, json.dumps(result), file=sys.stderr, flush=True)
            order = order[1:] + order[:1]
    finally:
        for target in in_process:
            target.close()
        for target in served:
            await target.close()
    results = {name: summary(rs) for name, rs in rounds.items()}
    reference = results["llm"]["median_tpot_ms"]
    for result in results.values():
        result["over_llm"] = result["median_tpot_ms"] / reference
    return {
        "benchmark": "served_vs_engine (latency at a fixed concurrency)",
        "model": args.model or "SmolLM2-135M-Instruct (default)",
        "workload": {
            "max_concurrency": args.max_concurrency,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "rounds": args.rounds,
        },
        "environment": {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")},
        "targets": results,
        "rounds": rounds,
    }
