"""The quantized matmul's kernel sets side by side, in one run.

Every set this CPU runs (avx2, avx512, amx; the portable one with
--with-generic) multiplies x [rows, 576] by Q4_1 matrices of 3072 x 576 (the
default model's fused gate/up shape; 40 of them, 44 MB in the kernels'
layout, more than the caches) through _core.testing.quant_linear, for 1 to
2,048 rows. The sets are alternated within each round and the best round
kept, since a shared host's speed moves between minutes. Reported per row
count: GFLOP/s of each set and each against avx512. The amx set runs its
tiles from 8 rows on (the AVX-512 kernel below; the same floats either way).

Prints JSON (and writes it with --out). Never asserts on time.

    python benchmarks/quant_kernels.py --out benchmarks/results/quant_kernels_cpu.json
"""

from __future__ import annotations

import argparse
import os
import time

import gguf
import numpy as np
import torch

from _report import cpu_model, emit  # benchmarks/_report.py (this folder is on sys.path)
from modelbench import _core

T = _core.testing


def q4_1_matrix(rows: int, cols: int, seed: int):
    """A random [rows, cols] matrix in Q4_1 blocks, repacked as the loader does."""
    weight = (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.05).astype(np.float32)
    qtype = gguf.GGMLQuantizationType.Q4_1
    raw = gguf.quants.quantize(weight, qtype)
    return T.repack_ggml(torch.from_numpy(raw), int(qtype), cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 512, 2048])
    parser.add_argument("--matrices", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--with-generic", action="store_true", help="also the portable C++ kernel")
    parser.add_argument("--out")
    args = parser.parse_args()

    names = (["generic"] if args.with_generic else []) + ["avx2", "avx512", "amx"]
    isas = [isa for isa in names if T.quant_isa_supported(isa)]
    out_features, in_features = 3072, 576
    weights = [q4_1_matrix(out_features, in_features, seed) for seed in range(args.matrices)]
    results = []
    for m in args.rows:
        x = torch.randn(m, in_features, generator=torch.Generator().manual_seed(m))
        best = dict.fromkeys(isas, float("inf"))
        for _ in range(args.rounds):
            for isa in isas:
                T.quant_linear(x, weights[0], isa)  # warm
                started = time.perf_counter()
                for w in weights:
                    T.quant_linear(x, w, isa)
                best[isa] = min(best[isa], time.perf_counter() - started)
        flops = 2 * m * in_features * out_features * len(weights)
        row = {"rows": m, **{f"{isa}_gflop_s": flops / best[isa] / 1e9 for isa in isas}}
        if "avx512" in isas:
            row.update({f"{isa}_over_avx512": best["avx512"] / best[isa] for isa in isas})
        results.append(row)
    emit(
        {
            "benchmark": "quant_kernels",
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "best_quant_isa": T.best_quant_isa(),
            "kernel_sets": isas,
            "weight": f"{args.matrices} x Q4_1 {out_features} x {in_features}",
            "rounds": args.rounds,
            "results": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
