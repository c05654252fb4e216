"""The CPU kernels alone, against what they replaced, in one run.

  - linear layers: ATen's torch.nn.functional.linear (MKL) against
    modelbench's packed kernel (_core.testing.packed_linear) on 40 weights of
    3072 x 576 (283 MB, more than the caches), for 1 to 2,048 rows:
    weight bytes read per second and FLOP/s;
  - the same in bfloat16, where the build has the packed bf16 kernel
    (_core.testing.packed_linear_bf16, AVX512-BF16): ATen's bf16 linear (oneDNN)
    against it;
  - decode attention: _core.testing.paged_attention_cpu for 32 sequences of 512 keys
    (SmolLM2's 9 query heads over 3 KV heads, head_dim 64), over one layer's
    pools (they fit in L3) and over 8 layers' pools taken in turn (they do
    not), with block tables in order and scattered over the pool: K/V bytes
    read per second;
  - the machine's memory bandwidth in the same run (a STREAM-style copy),
    since these numbers move with it: a busy host halves it.

Prints JSON (and writes it with --out). Never asserts on time.

    python benchmarks/kernels_vs_aten.py --out kernels_vs_aten.json
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _report import emit  # benchmarks/_report.py (this folder is on sys.path)
from modelbench import _core


def seconds_per_call(fn, repeats: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def stream_copy_gb_s(num_bytes: int = 512 * 1024 * 1024) -> float:
    src = torch.ones(num_bytes // 4)
    dst = torch.empty_like(src)
    return 2 * num_bytes / min(seconds_per_call(lambda: dst.copy_(src), 1) for _ in range(5)) / 1e9


def linear_kernels(rows: list[int], dtype: torch.dtype = torch.float32) -> list[dict]:
    in_features, out_features, num_weights = 576, 3072, 40
    weights = [torch.randn(out_features, in_features).to(dtype) for _ in range(num_weights)]
    if dtype == torch.bfloat16:
        packed = [_core.testing.pack_linear_weight_bf16(w) for w in weights]
        kernel = _core.testing.packed_linear_bf16
    else:
        packed = [_core.testing.pack_linear_weight(w) for w in weights]
        kernel = _core.testing.packed_linear
    weight_bytes = num_weights * out_features * in_features * weights[0].element_size()
    out = []
    for m in rows:
        x = torch.randn(m, in_features).to(dtype)
        repeats = 5 if m < 512 else 1
        aten = seconds_per_call(
            lambda x=x: [torch.nn.functional.linear(x, w) for w in weights], repeats
        )
        ours = seconds_per_call(lambda x=x: [kernel(x, p, out_features) for p in packed], repeats)
        flops = 2 * m * num_weights * out_features * in_features
        out.append(
            {
                "rows": m,
                "aten_gb_s": weight_bytes / aten / 1e9,
                "aten_gflop_s": flops / aten / 1e9,
                "packed_gb_s": weight_bytes / ours / 1e9,
                "packed_gflop_s": flops / ours / 1e9,
                "packed_over_aten": aten / ours,
            }
        )
    return out


def decode_attention() -> list[dict]:
    num_seqs, context, num_heads, num_kv_heads, head_dim, block_size = 32, 512, 9, 3, 64, 16
    num_blocks = num_seqs * context // block_size
    in_order = torch.arange(num_blocks, dtype=torch.int32).view(num_seqs, -1)
    scattered = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(0)).to(
        torch.int32
    )
    query = torch.randn(num_seqs, num_heads, head_dim)
    query_start_loc = torch.arange(num_seqs + 1, dtype=torch.int64)
    context_lens = torch.full((num_seqs,), context, dtype=torch.int64)
    kv_bytes = num_seqs * context * num_kv_heads * head_dim * 2 * 4
    out = []
    for num_layers, tables in ((1, "in_order"), (8, "in_order"), (8, "scattered")):
        shape = (num_blocks, num_kv_heads, block_size, head_dim)
        pools = [(torch.randn(shape), torch.randn(shape)) for _ in range(num_layers)]
        block_tables = in_order if tables == "in_order" else scattered.view(num_seqs, -1)
        per_call = (
            seconds_per_call(
                lambda pools=pools, block_tables=block_tables: [
                    _core.testing.paged_attention_cpu(
                        query, k, v, query_start_loc, context_lens, block_tables, head_dim**-0.5
                    )
                    for k, v in pools
                ],
                10,
            )
            / num_layers
        )
        out.append(
            {
                "num_seqs": num_seqs,
                "context": context,
                "layers_cycled": num_layers,
                "block_tables": tables,
                "ms_per_layer": per_call * 1e3,
                "kv_gb_s": kv_bytes / per_call / 1e9,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out")
    args = parser.parse_args()
    result = {
        "benchmark": "kernels_vs_aten",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "stream_copy_gb_s": stream_copy_gb_s(),
        "linear": linear_kernels([1, 2, 4, 8, 16, 32, 64, 512, 2048]),
        "linear_bf16": (
            linear_kernels([1, 8, 32, 64, 512, 2048], torch.bfloat16)
            if _core.testing.bf16_linear_supported()
            else "no bf16 kernel in this build"
        ),
        "decode_attention": decode_attention(),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
