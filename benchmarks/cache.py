"""How much the response cache saves and costs (issue 23):

1. a cache hit through HTTP: p50/p99 of a repeated chat request against a
   real ``modelbench serve`` of the default model with ``--cache exact``
   (target p99 <= 10 ms);
2. the miss it replaces: the same requests' first asking, each a 128-token
   answer (``ignore_eos``), median miss over median hit (target >= 60x);
3. a miss's added lookup cost with 100,000 entries in one partition's
   index (in process, the semantic path: exact lookup, HNSW search, near-miss
   guard), p99 (target <= 5 ms), with the prompt's embedding timed apart (the
   transformers all-MiniLM-L6-v2 here; the server embeds with a model it
   serves).

Numbers under ``chrt --idle 0`` on a busy machine are pessimistic. Prints
JSON (and writes it with --out).

    python3 benchmarks/cache.py --out benchmarks/results/cache_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from _report import emit, free_port  # benchmarks/_report.py (this folder is on sys.path)
from modelbench.cache.embedder import SentenceTransformerEmbedder, embed
from modelbench.cache.entry import Answer, CacheEntry
from modelbench.cache.fingerprint import build_query
from modelbench.cache.memory_backend import MemoryBackend
from modelbench.cache.response_cache import ResponseCache
from modelbench.cache.settings import CachePolicy

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"hit_p99_ms_max": 10, "speedup_min": 60, "lookup_p99_ms_max": 5}
MODEL = "SmolLM2-135M-Instruct"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def served(tmp: Path, misses: int, hits: int, max_tokens: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MODELBENCH_DATABASE_URL": f"sqlite:///{tmp / 'store.db'}",
        "MODELBENCH_KEYS_FILE": str(tmp / "keys.json"),
        "MODELBENCH_RUN_WORKER": "false",
    }
    command = [sys.executable, "-m", "modelbench", "serve", "--port", str(port)]
    command += ["--cache", "exact", "--log-level", "warning", "--log-format", "text"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("modelbench serve did not become ready")
            time.sleep(0.2)
        miss_ms, hit_ms, tokens = [], [], []
        with httpx.Client(base_url=url, timeout=300) as client:
            for i in range(misses):
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Write story number {i}."}],
                    "temperature": 0,
                    "max_tokens": max_tokens,
                    "ignore_eos": True,
                }
                started = time.perf_counter()
                miss = client.post("/v1/chat/completions", json=body)
                miss_ms.append((time.perf_counter() - started) * 1000)
                assert miss.headers["x-modelbench-cache"] == "miss", miss.text
                tokens.append(miss.json()["usage"]["completion_tokens"])
                for _ in range(hits // misses):
                    started = time.perf_counter()
                    hit = client.post("/v1/chat/completions", json=body)
                    hit_ms.append((time.perf_counter() - started) * 1000)
                    assert hit.headers["x-modelbench-cache"] == "hit-exact", hit.text
        return {
            "model": MODEL,
            "completion_tokens": tokens,
            "miss_ms_median": statistics.median(miss_ms),
            "hit_ms_p50": percentile(hit_ms, 50),
            "hit_ms_p99": percentile(hit_ms, 99),
            "hits_measured": len(hit_ms),
            "speedup_median": statistics.median(miss_ms) / statistics.median(hit_ms),
        }
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def lookup_cost(entries: int, lookups: int) -> dict:
    """Misses against ``entries`` cached prompts of one partition."""
    embedder = SentenceTransformerEmbedder()
    prompts = [
        f"What is the population of city number {i} in the year {1900 + i}?" for i in range(64)
    ]
    embed_ms = []
    for text in prompts:
        started = time.perf_counter()
        await embed(embedder, [text])
        embed_ms.append((time.perf_counter() - started) * 1000)
    vectors = {t: v for t, v in zip(prompts, await embed(embedder, prompts), strict=True)}

    async def known(texts: list[str]) -> np.ndarray:  # what was embedded above, timed apart
        return np.stack([vectors[t] for t in texts])

    policy = CachePolicy("semantic")
    backend = MemoryBackend(entries + lookups)
    cache = ResponseCache(backend, known)
    rng = np.random.default_rng(0)
    filler = rng.standard_normal((entries, 384)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    partition = query(prompts[0], policy).write_partition
    answer = Answer(["x"], ["stop"], 1, 1)
    started = time.perf_counter()
    for i in range(entries):
        entry = CacheEntry(partition, f"k{i}", "m:1", "key_a", answer, time.time() + 3600, text="f")
        await backend.put(entry, filler[i])
    fill_s = time.perf_counter() - started
    lookup_ms = []
    for i in range(lookups):
        q = query(prompts[i % len(prompts)], policy)
        started = time.perf_counter()
        found = await cache.lookup(q)
        lookup_ms.append((time.perf_counter() - started) * 1000)
        assert found.result == "miss", found.result
    return {
        "entries": await backend.count(),
        "fill_s": fill_s,
        "lookups": lookups,
        "lookup_ms_p50": percentile(lookup_ms, 50),
        "lookup_ms_p99": percentile(lookup_ms, 99),
        "embed_ms_p50": percentile(embed_ms, 50),
        "embed_ms_p99": percentile(embed_ms, 99),
        "embedder": "all-MiniLM-L6-v2 through transformers (timed apart from the lookup)",
    }


def query(text: str, policy: CachePolicy):
    return build_query(
        model="m:1",
        model_fingerprint="",
        endpoint="/v1/chat/completions",
        parameters={"temperature": 0},
        prompt=text,
        owner="key_a",
        share=False,
        policy=policy,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--misses", type=int, default=5)
    parser.add_argument("--hits", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        http = served(Path(tmp), args.misses, args.hits, args.max_tokens)
    lookup = asyncio.run(lookup_cost(args.entries, args.lookups))
    result = {
        "targets": TARGETS,
        "http": http,
        "lookup": lookup,
        "met": {
            "hit_p99": http["hit_ms_p99"] <= TARGETS["hit_p99_ms_max"],
            "speedup": http["speedup_median"] >= TARGETS["speedup_min"],
            "lookup_p99": lookup["lookup_ms_p99"] <= TARGETS["lookup_p99_ms_max"],
        },
        "scheduling": os.environ.get("MODELBENCH_BENCH_NOTE", ""),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
