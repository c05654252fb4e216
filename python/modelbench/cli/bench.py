"""``modelbench bench``: one workload, one target, vLLM's metrics; a summary
table, a result JSON (``--result-file``), the run saved to the store
(``--save``), and ``--sweep`` over request rates or concurrency levels.

    modelbench bench --backend openai --base-url http://127.0.0.1:8000 \\
        --model SmolLM2-135M-Instruct \\
        --dataset random --num-prompts 100 --random-input-len 256 --random-output-len 64 \\
        --request-rate 4 --goodput ttft:500 tpot:100 --result-file run.json --save
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from typing import Any

BACKENDS = ("openai", "openai-chat", "modelbench", "engine", "transformers")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "bench", help="benchmark a server, the engine or transformers (vLLM's metrics)"
    )
    p.add_argument("--backend", choices=BACKENDS, default="modelbench")
    p.add_argument(
        "--base-url", default="http://127.0.0.1:8000", help="the server (openai backends)"
    )
    p.add_argument(
        "--model",
        help="served model name (openai backends), or folder / .gguf "
        "(engine, transformers); default: the default model",
    )
    p.add_argument(
        "--tokenizer",
        help="folder or .gguf whose tokenizer builds prompts and counts tokens "
        "(default: --model when it is a path, else the default model)",
    )
    p.add_argument(
        "--api-key",
        help="bearer key for the server (default: MODELBENCH_API_KEY, else OPENAI_API_KEY)",
    )
    p.add_argument(
        "--dataset", choices=("random", "sharegpt", "jsonl", "builtin"), default="random"
    )
    p.add_argument("--dataset-path", help="sharegpt JSON or jsonl file")
    p.add_argument("--num-prompts", type=int, default=100)
    p.add_argument("--random-input-len", type=int, default=256)
    p.add_argument("--random-output-len", type=int, default=64)
    p.add_argument("--random-range-ratio", type=float, default=0.0)
    p.add_argument(
        "--request-rate", type=float, default=math.inf, help="requests/s (default inf: all at once)"
    )
    p.add_argument(
        "--burstiness", type=float, default=1.0, help="1: Poisson; lower: burstier (gamma)"
    )
    p.add_argument("--max-concurrency", type=int, help="requests in flight at most")
    p.add_argument(
        "--batch-size", type=int, default=1, help="transformers: padded static batch size"
    )
    p.add_argument("--dtype", default="float32", help="engine and transformers: float32 | bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--percentiles", default="50,90,95,99", help="comma-separated, e.g. 50,99,99.9")
    p.add_argument(
        "--goodput", nargs="+", metavar="SLO:MS", help="e.g. ttft:500 tpot:100 e2el:5000"
    )
    p.add_argument(
        "--sweep", help="request-rate=1,2,4 or max-concurrency=1,4,16: one run per value"
    )
    p.add_argument("--name", help="a label for the run(s) in the store and reports")
    p.add_argument("--result-file", help="write the result JSON here (a list of runs with --sweep)")
    p.add_argument(
        "--save", action="store_true", help="save the run(s) to the store (MODELBENCH_DATABASE_URL)"
    )
    p.add_argument(
        "--database-url", help="the store to save to (default: MODELBENCH_DATABASE_URL or SQLite)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)


def parse_sweep(spec: str | None) -> tuple[str, list[float]] | None:
    if spec is None:
        return None
    name, _, values = spec.partition("=")
    if name not in ("request-rate", "max-concurrency") or not values:
        raise ValueError(
            f"sweep must look like request-rate=1,2,4 or max-concurrency=1,4,16, got {spec!r}"
        )
    try:
        numbers = [float(v) for v in values.split(",")]
    except ValueError as exc:
        raise ValueError(f"sweep values must be numbers, got {values!r}") from exc
    return name, numbers


def main(args: argparse.Namespace) -> None:
    if args.api_key is None:
        args.api_key = os.environ.get("MODELBENCH_API_KEY") or os.environ.get("OPENAI_API_KEY")
    try:
        results = asyncio.run(run(args))
    except ValueError as exc:
        raise SystemExit(f"modelbench bench: {exc}") from exc
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump(results if len(results) > 1 else results[0], f, indent=2)
            f.write("\n")
    for result in results:
        hint = refused_hint(result, key_given=args.api_key is not None)
        if hint:
            raise SystemExit(f"modelbench bench: {hint}")


def refused_hint(result: dict[str, Any], key_given: bool) -> str | None:
    """What to do when the server refused every request for want of a key
    (401) or for the key's rights (403); None when anything got through."""
    kinds = set(result.get("errors_by_kind") or {})
    if result.get("completed") or not kinds or not kinds <= {"HTTP 401", "HTTP 403"}:
        return None
    if "HTTP 401" in kinds:
        if key_given:
            return (
                "every request was refused with HTTP 401: the server does not accept the key "
                "given (--api-key, MODELBENCH_API_KEY or OPENAI_API_KEY); check it"
            )
        return (
            "every request was refused with HTTP 401: the server wants an API key; pass "
            "--api-key KEY or set MODELBENCH_API_KEY (or OPENAI_API_KEY)"
        )
    return "every request was refused with HTTP 403: the key given may not use this model or route"


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from modelbench.bench.session import BenchConfig, run_benchmark

    percentiles = tuple(float(p) for p in args.percentiles.split(","))
    sweep = parse_sweep(args.sweep)
    points: list[tuple[float, int | None]] = [(args.request_rate, args.max_concurrency)]
    if sweep is not None:
        name, values = sweep
        points = [
            ((v, args.max_concurrency) if name == "request-rate" else (args.request_rate, int(v)))
            for v in values
        ]
    outputs = []
    for rate, concurrency in points:
        config = BenchConfig(
            backend=args.backend,
            base_url=args.base_url,
            model=args.model,
            tokenizer=args.tokenizer,
            api_key=args.api_key,
            dataset=args.dataset,
            dataset_path=args.dataset_path,
            num_prompts=args.num_prompts,
            random_input_len=args.random_input_len,
            random_output_len=args.random_output_len,
            random_range_ratio=args.random_range_ratio,
            request_rate=rate,
            burstiness=args.burstiness,
            max_concurrency=concurrency,
            batch_size=args.batch_size,
            dtype=args.dtype,
            seed=args.seed,
            percentiles=percentiles,
            goodput=args.goodput,
            name=args.name,
            sweep=args.sweep,
        )
        result = await run_benchmark(config, progress=not args.no_progress)
        print_summary(result)
        if args.save:
            from modelbench.bench.saved_runs import save_run

            run_id = await asyncio.to_thread(save_run, result, args.database_url)
            result["run_id"] = run_id
            print(f"saved as run {run_id}")
        outputs.append(result)
    return outputs


def print_summary(r: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    line = "=" * 50

    def row(label: str, value: Any, fmt: str = "{:<40} {:<10.2f}") -> None:
        print(
            fmt.format(label, value) if isinstance(value, float) else f"{label:<40} {value:<10}",
            file=out,
        )

    print(f"{' Serving Benchmark Result ':=^50}", file=out)
    row("Backend:", r["config"]["backend"])
    row("Successful requests:", r["completed"])
    row("Failed requests:", r["failed"])
    row("Benchmark duration (s):", r["duration"])
    row("Total input tokens:", r["total_input_tokens"])
    row("Total generated tokens:", r["total_output_tokens"])
    row("Request throughput (req/s):", r["request_throughput"])
    if r.get("request_goodput") is not None:
        row("Request goodput (req/s):", r["request_goodput"])
    row("Output token throughput (tok/s):", r["output_throughput"])
    row("Total token throughput (tok/s):", r["total_token_throughput"])
    for key, title in (
        ("ttft", "Time to First Token"),
        ("tpot", "Time per Output Token (excl. 1st token)"),
        ("itl", "Inter-token Latency"),
        ("e2el", "End-to-end Latency"),
    ):
        print(f"{title:-^50}", file=out)
        row(f"Mean {key.upper()} (ms):", r[f"mean_{key}_ms"])
        row(f"Median {key.upper()} (ms):", r[f"median_{key}_ms"])
        for p in r["config"]["percentiles"]:
            name = str(int(p)) if float(p).is_integer() else str(p)
            row(f"P{name} {key.upper()} (ms):", r[f"p{name}_{key}_ms"])
    print(f"{'Client overhead':-^50}", file=out)
    row("Mean send lag (ms):", r["client"]["mean_send_lag_ms"])
    row("Max send lag (ms):", r["client"]["max_send_lag_ms"])
    if r["errors_by_kind"]:
        print(f"{'Errors':-^50}", file=out)
        for error, count in r["errors_by_kind"].items():
            print(f"{count:>6}  {error[:120]}", file=out)
    print(line, file=out)
