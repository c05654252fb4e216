"""How close a decode step is to what this machine allows.

Measured in one run, on the default model (or --model) in its dtype
("auto", the default: a GGUF file's quantized matrices kept quantized):
  - memory bandwidth: a STREAM-style copy of a large float32 array
    (bytes read + bytes written per second); a read-only sum for reference;
  - matmul peak: the best FLOP/s of float32 GEMMs measured here, ATen's
    (MKL) on a large square product and on decode shapes, and modelbench's
    own packed kernel on many rows, and for a quantized model the quantized
    kernel on many rows (the highest is the peak: a stricter bound than any
    one of them);
  - the engine's decode step time at batch 1 and at batch 32 with a context
    of 512 tokens (steps after every prefill is done, median over the run).

The bound of a step is max(bytes it must read / bandwidth, FLOPs / peak):
every weight once (a quantized matrix: the bytes its blocks take in the
kernels' layout, what the kernel really reads), each sequence's K and V for
its whole context, and 2 FLOPs
per weight per sequence plus attention's. Prints JSON (and writes it with
--out) with each step's time over its bound. Never asserts on time. On a
shared host, --rounds N repeats the whole measurement N times (each round's
bound from its own bandwidth and peak) and reports the median round.

    python benchmarks/decode_bound.py --out decode_bound.json
    python benchmarks/decode_bound.py --rounds 3 --out decode_bound.json
    python benchmarks/decode_bound.py --dtype bfloat16 --out decode_bound_bf16.json
    python benchmarks/decode_bound.py --kv-cache-dtype bfloat16 --out decode_bound_kv_bf16.json
    python benchmarks/decode_bound.py --kv-cache-dtype int8 --rounds 3 --out bound_kv_int8.json
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

import torch

from _report import cpu_model, emit  # benchmarks/_report.py (this folder is on sys.path)
from modelbench import LLM, SamplingParams


def stream_copy_bandwidth(num_bytes: int = 512 * 1024 * 1024, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) copying a float32 array, best of `repeats`."""
    src = torch.ones(num_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - started)
    return 2 * num_bytes / best


def best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def read_bandwidth(num_bytes: int = 512 * 1024 * 1024) -> float:
    """Bytes read per second summing a float32 array (for reference)."""
    src = torch.ones(num_bytes // 4, dtype=torch.float32)
    return num_bytes / best_time(src.sum, 5)


def matmul_flops(
    m: int, k: int, n: int, repeats: int = 10, dtype: torch.dtype = torch.float32
) -> float:
    """FLOP/s of ATen's [m, k] @ [k, n] in `dtype`, best of `repeats`."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    return 2 * m * k * n / best_time(lambda: torch.mm(a, b), repeats)


def packed_kernel_flops(
    m: int, k: int, n: int, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """FLOP/s of modelbench's packed linear kernel in `dtype` (float32, or bfloat16 where
    the build has it), x [m, k] times a [n, k] weight; 0 where there is no such kernel."""
    from modelbench import _core

    if dtype == torch.bfloat16:
        if not _core.testing.bf16_linear_supported():
            return 0.0
        x, packed = (
            torch.randn(m, k).to(dtype),
            _core.testing.pack_linear_weight_bf16(torch.randn(n, k).to(dtype)),
        )
        return (
            2
            * m
            * k
            * n
            / best_time(lambda: _core.testing.packed_linear_bf16(x, packed, n), repeats)
        )
    x, packed = torch.randn(m, k), _core.testing.pack_linear_weight(torch.randn(n, k))
    return 2 * m * k * n / best_time(lambda: _core.testing.packed_linear(x, packed, n), repeats)


def quant_kernel_flops(m: int, k: int, n: int, repeats: int = 5) -> float:
    """FLOP/s of modelbench's quantized kernel on a [n, k] Q4_0 matrix, x [m, k]
    (every block type runs the same integer dot products)."""
    from modelbench import _core

    w = _core.testing.quantize_matrix(torch.randn(n, k), 2)  # ggml type 2: Q4_0
    x = torch.randn(m, k)
    return 2 * m * k * n / best_time(lambda: _core.testing.quant_linear(x, w), repeats)


def weight_bytes_read(llm: LLM) -> tuple[int, dict[str, int]]:
    """Bytes a decode step reads for the weights of a quantized model: each
    matrix's blocks in the kernels' layout (quant_kernels.h), the tied head
    once; and how many matrices of each ggml type there are."""
    from modelbench import _core
    from modelbench.models import load_checkpoint

    checkpoint = load_checkpoint(llm.model_source, keep_quantized=True)
    spec = llm.runner.spec
    total, types = 0, {}
    for name, tensor in checkpoint.weights.items():
        if tensor.dim() != 2:
            continue
        if name in checkpoint.quant_types:
            w = _core.testing.repack_ggml(
                tensor, checkpoint.quant_types[name], tensor_cols(name, spec)
            )
            total += w.nbytes
            key = str(w.ggml_type)
        else:
            total += tensor.numel() * 4
            key = "float32"
        types[key] = types.get(key, 0) + 1
    return total, types


def tensor_cols(name: str, spec) -> int:
    if "down_proj" in name:
        return spec.intermediate_size
    if "o_proj" in name:
        return spec.num_heads * spec.head_dim
    return spec.hidden_size


def decode_step_times(llm: LLM, batch: int, context: int, steps: int, seed: int) -> list[float]:
    """Times of the engine's pure decode steps for `batch` sequences at `context` tokens."""
    rng = random.Random(seed)
    vocab = llm.config.vocab_size
    engine = llm.engine
    params = SamplingParams(temperature=0.0, max_tokens=steps + 2, ignore_eos=True).to_core()
    for i in range(batch):
        engine.add_request(
            f"b{batch}-{i}", [rng.randrange(100, vocab) for _ in range(context)], params
        )
    times = []
    while engine.has_unfinished_requests():
        before = engine.stats()
        started = time.perf_counter()
        engine.step()
        elapsed = time.perf_counter() - started
        after = engine.stats()
        # A pure decode step of the whole batch: no prompt token, one new token per sequence.
        if (
            after.num_prompt_tokens == before.num_prompt_tokens
            and after.num_generation_tokens - before.num_generation_tokens == batch
        ):
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="the model's dtype (auto: float32 with a GGUF file's quantized matrices kept "
        "quantized); the bound counts its bytes and its matmul peak",
    )
    parser.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=["auto", "bfloat16", "int8"],
        help="the KV cache's dtype (auto: the model's, bfloat16 for quantized weights; int8: "
        "rows of int8 with a float32 scale each); the bound counts its bytes",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure bandwidth, peak and steps this many times; report the median round",
    )
    parser.add_argument("--out")
    args = parser.parse_args()

    llm = LLM(
        args.model,
        dtype=args.dtype,
        kv_cache_dtype=args.kv_cache_dtype,
        max_model_len=args.context + args.steps + 8,
        max_num_seqs=max(args.batch, 1),
        kv_cache_memory=1024**3,
    )
    spec = llm.runner.spec
    hidden, layers = spec.hidden_size, spec.num_layers
    q_dim, kv_dim = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    per_layer = hidden * (q_dim + 2 * kv_dim) + q_dim * hidden + 3 * hidden * spec.intermediate_size
    num_weights = (
        layers * per_layer + spec.vocab_size * hidden
    )  # the head (tied or not) is read once
    dtype = getattr(torch, llm.args.resolved_dtype())
    bytes_per = torch.tensor([], dtype=dtype).element_size()
    quantized = llm.args.keeps_quantized() and str(llm.model_source).endswith(".gguf")
    weight_bytes, weight_types = (
        weight_bytes_read(llm) if quantized else (num_weights * bytes_per, {})
    )
    # K and V of one token over all layers, as the pools hold them (an int8
    # cache's row scales included).
    kv_bytes_per_token = llm.runner.kv_cache_bytes / (
        llm.runner.num_kv_blocks * llm.args.block_size
    )

    def measure_round(round_index: int) -> dict:
        """The bandwidth, the matmul peak and the steps, measured together."""
        bandwidth = stream_copy_bandwidth()
        # The matmul peak in the model's dtype.
        peaks = {
            "aten_2048x2048x2048": matmul_flops(2048, 2048, 2048, repeats=3, dtype=dtype),
            f"aten_decode_{args.batch}x{hidden}x{spec.intermediate_size}": matmul_flops(
                args.batch, hidden, spec.intermediate_size, dtype=dtype
            ),
            f"packed_2048x{hidden}x{2 * spec.intermediate_size}": packed_kernel_flops(
                2048, hidden, 2 * spec.intermediate_size, dtype=dtype
            ),
        }
        if quantized:
            peaks[f"quant_q4_0_2048x{hidden}x{2 * spec.intermediate_size}"] = quant_kernel_flops(
                2048, hidden, 2 * spec.intermediate_size
            )
        peak = max(peaks.values())
        measured = {
            "stream_copy_gb_s": bandwidth / 1e9,
            "read_gb_s": read_bandwidth() / 1e9,
            "matmul_gflop_s": peak / 1e9,
            "matmul_gflop_s_measured": {k: v / 1e9 for k, v in peaks.items()},
            "steps": {},
        }
        for batch in (1, args.batch):
            times = decode_step_times(
                llm, batch, args.context, args.steps, seed=batch + 1000 * round_index
            )
            kv_bytes = batch * args.context * kv_bytes_per_token
            flops = 2 * num_weights * batch + 4 * batch * args.context * q_dim * layers
            bound = max((weight_bytes + kv_bytes) / bandwidth, flops / peak)
            median = statistics.median(times)
            measured["steps"][f"batch_{batch}"] = {
                "context": args.context,
                "median_step_ms": median * 1000,
                "num_steps_timed": len(times),
                "bytes_read_mb": (weight_bytes + kv_bytes) / 1e6,
                "gflop": flops / 1e9,
                "memory_bound_ms": (weight_bytes + kv_bytes) / bandwidth * 1000,
                "compute_bound_ms": flops / peak * 1000,
                "bound_ms": bound * 1000,
                "step_over_bound": median / bound,
                "fraction_of_bound": bound / median,
                "step_over_memory_bound": median / ((weight_bytes + kv_bytes) / bandwidth),
            }
        return measured

    # A shared host's speed moves between minutes: each round measures the
    # bandwidth, the peak and the steps together; the round reported at the
    # top is the one with the median batch-N fraction (all are listed).
    rounds = [measure_round(i) for i in range(args.rounds)]
    key = f"batch_{args.batch}"
    ordered = sorted(rounds, key=lambda r: r["steps"][key]["fraction_of_bound"])
    chosen = ordered[(len(ordered) - 1) // 2]
    result = {
        "benchmark": "decode_bound",
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "dtype": llm.args.dtype,
        "quantized": quantized,
        "weight_bytes_mb": weight_bytes / 1e6,
        "weight_matrices_by_ggml_type": weight_types,
        "quant_kernels": __import__("modelbench")._core.testing.active_quant_isa(),
        "cpu_model": cpu_model(),
        "kv_cache_dtype": llm.runner.kv_cache_dtype,
        **chosen,
        "rounds": [
            {
                "stream_copy_gb_s": r["stream_copy_gb_s"],
                "matmul_gflop_s": r["matmul_gflop_s"],
                **{
                    f"{name}_{field}": step[field]
                    for name, step in r["steps"].items()
                    for field in ("median_step_ms", "bound_ms", "fraction_of_bound")
                },
            }
            for r in rounds
        ],
    }
    # The performance issue's targets, side by side with what was measured.
    b1, bn = result["steps"]["batch_1"], result["steps"][key]
    result["targets"] = {
        "batch_1_step_over_memory_bound": {
            "measured": b1["step_over_memory_bound"],
            "target": "<= 1.25",
        },
        f"batch_{args.batch}_fraction_of_bound": {
            "measured": bn["fraction_of_bound"],
            "target": ">= 0.6",
        },
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
