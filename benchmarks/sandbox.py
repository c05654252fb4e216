"""How fast the sandbox scores: HumanEval's 164 canonical solutions through
``modelbench.eval.sandbox`` (candidates in parallel, one per core by
default), and the per-candidate overhead: a trivial program (``pass``) run
one at a time, against the same program run as a bare ``python -I -S``
subprocess, so the overhead is what the isolation adds.

Targets (issue 22): 164 canonical solutions in under 30 s, overhead p50
at most 40 ms, on this project's 2-core machines. Prints JSON (and writes it
with --out).

    python3 benchmarks/sandbox.py --out benchmarks/results/sandbox_cpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _report import cpu_model, emit  # benchmarks/_report.py (this folder is on sys.path)
from modelbench.eval.humaneval import load_problems, score
from modelbench.eval.sandbox import Sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--isolation", default="auto", choices=["auto", "bubblewrap", "rlimits"])
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overhead-runs", type=int, default=100)
    parser.add_argument("--out")
    args = parser.parse_args()

    sandbox = Sandbox(isolation=args.isolation, concurrency=args.concurrency)
    problems = load_problems()
    started = time.monotonic()
    results = score(problems, [(p.task_id, 0, p.canonical_solution) for p in problems], sandbox)
    canonical_s = time.monotonic() - started

    python = str(sandbox.python)
    bare, boxed = [], []
    for _ in range(args.overhead_runs):  # interleaved: the host's noise hits both alike
        t = time.monotonic()
        subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)
        bare.append(time.monotonic() - t)
        t = time.monotonic()
        assert sandbox.run("pass").passed
        boxed.append(time.monotonic() - t)
    overhead = sorted(b - a for a, b in zip(bare, boxed))

    emit(
        {
            "host": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
            "isolation": sandbox.isolation,
            "concurrency": args.concurrency,
            "canonical": {
                "problems": len(problems),
                "passed": sum(r.passed for r in results),
                "seconds": round(canonical_s, 3),
                "target_seconds": 30,
            },
            "per_candidate_ms": {
                "bare_python_p50": round(statistics.median(bare) * 1000, 2),
                "sandboxed_p50": round(statistics.median(boxed) * 1000, 2),
                "overhead_p50": round(statistics.median(overhead) * 1000, 2),
                "overhead_p90": round(overhead[int(0.9 * (len(overhead) - 1))] * 1000, 2),
                "target_overhead_p50": 40,
                "runs": args.overhead_runs,
            },
        },
        args.out,
    )


if __name__ == "__main__":
    main()
