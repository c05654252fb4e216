"""``modelbench eval humaneval``: generate completions for HumanEval's 164
problems (in process, or from any OpenAI-compatible server), or take them
from a file, score them in the sandbox, and print and store pass@k."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any


def read_completions(path: str) -> list[tuple[str, int, str]]:
    """HumanEval's own format: one JSON object per line with ``task_id`` and
    ``completion``; a task's k-th line is its sample k."""
    seen: dict[str, int] = {}
    out = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            task_id, completion = str(item["task_id"]), str(item["completion"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}:{number}: expected a JSON object with task_id and completion ({exc})"
            ) from exc
        out.append((task_id, seen.get(task_id, 0), completion))
        seen[task_id] = seen.get(task_id, 0) + 1
    if not out:
        raise ValueError(f"{path} holds no completions")
    return out


def run_humaneval(args: argparse.Namespace) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from modelbench.eval.generate import Sampling, generate_local, generate_remote
    from modelbench.eval.humaneval import load_problems, score, summarize
    from modelbench.eval.sandbox import Sandbox

    problems = load_problems(args.limit)
    sampling = Sampling(
        args.samples, args.style, args.temperature, args.top_p, args.max_tokens, args.seed
    )
    sandbox = Sandbox(concurrency=args.sandbox_concurrency or os.cpu_count() or 1)
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn())
    refusals: dict[tuple[str, int], str] = {}
    with Progress(*columns, TimeElapsedColumn()) as progress:
        if args.completions:
            model = args.model or f"completions from {Path(args.completions).name}"
            completions = read_completions(args.completions)
            wanted = {t for t, _, _ in completions}
            problems = [p for p in problems if p.task_id in wanted]
        else:
            bar = progress.add_task("generating", total=len(problems) * args.samples)

            def advance() -> None:
                progress.advance(bar)

            if args.base_url:
                model, completions = asyncio.run(
                    generate_remote(
                        problems,
                        args.base_url,
                        args.model,
                        sampling,
                        args.concurrency,
                        args.api_key
                        or os.environ.get("MODELBENCH_API_KEY")
                        or os.environ.get("OPENAI_API_KEY"),
                        advance,
                        refusals,
                    )  # fmt: skip
                )
            else:
                model = args.model or "SmolLM2-135M-Instruct"
                completions = asyncio.run(
                    generate_local(
                        problems, args.model, sampling, args.concurrency, advance, refusals
                    )
                )
        scoring = progress.add_task("scoring", total=len(completions))
        started = time.monotonic()
        results = score(
            problems,
            completions,
            sandbox,
            lambda _: progress.advance(scoring),
            "solution" if args.style == "chat" else "completion",
            refusals,
        )
        score_s = time.monotonic() - started
    summary = {
        **summarize(results),
        "problems": len({r.task_id for r in results}),
        "samples": len(results) // max(1, len({r.task_id for r in results})),
        "passed": sum(r.passed for r in results),
        "isolation": sandbox.isolation,
        "score_s": round(score_s, 3),
    }
    config = {
        "model": model,
        "base_url": args.base_url,
        "completions": args.completions,
        "samples": args.samples,
        "style": args.style,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "limit": args.limit,
    }
    return {"benchmark": "humaneval", "model": model, **summary, "config": config,
            "results": results}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    try:
        out = run_humaneval(args)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"modelbench eval humaneval: {exc}") from exc
    results = out.pop("results")
    keys = [k for k in out if k.startswith("pass@")]
    print(f"model: {out['model']}   problems: {out['problems']}   samples each: {out['samples']}")
    print("   ".join(f"{k} = {out[k]:.4f}" for k in keys))
    print(f"scored {len(results)} samples in {out['score_s']:.1f} s (sandbox: {out['isolation']})")
    if args.json:
        Path(args.json).write_text(
            json.dumps({**out, "results": [asdict(r) for r in results]}, indent=2)
        )
        print(f"wrote {args.json}")
    if not args.no_save:
        from modelbench.eval.saved import save_eval_run

        summary = {k: v for k, v in out.items() if k not in ("config", "benchmark", "model")}
        run_id = save_eval_run(
            "humaneval", out["model"], out["config"], summary, results, args.database_url
        )
        print(f"saved as {run_id} (modelbench report {run_id})")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("eval", help="measure quality: HumanEval scored in a sandbox")
    benchmarks = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    h = benchmarks.add_parser(
        "humaneval",
        help="HumanEval's 164 problems, completions run in the sandbox, unbiased pass@k",
    )
    h.add_argument(
        "--model",
        help="in process: a Hugging Face folder or .gguf (default: the default model); "
        "with --base-url: the served model's name (default: the first it lists)",
    )
    h.add_argument("--base-url", help="an OpenAI-compatible server (ours or not)")
    h.add_argument("--api-key", help="its key (default: MODELBENCH_API_KEY or OPENAI_API_KEY)")
    h.add_argument("--samples", type=int, default=1, help="completions per problem (default 1)")
    h.add_argument(
        "--style",
        choices=["completion", "chat"],
        default="completion",
        help="completion: the model continues the prompt (HumanEval's way, for base models); "
        "chat: an instruction through the chat template, the answer's code block scored as "
        "a whole function (for instruct models)",
    )
    h.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    h.add_argument("--top-p", type=float, default=0.95)
    h.add_argument("--max-tokens", type=int, default=512)
    h.add_argument("--seed", type=int, help="sample i of a problem uses seed + i")
    h.add_argument("--limit", type=int, help="only the first K problems")
    h.add_argument("--concurrency", type=int, default=32, help="generation requests at once")
    h.add_argument("--sandbox-concurrency", type=int, help="candidates run at once (default: CPUs)")
    h.add_argument("--completions", help="score these (HumanEval's JSONL) instead of generating")
    h.add_argument("--json", help="write the summary and every sample's result here")
    h.add_argument("--no-save", action="store_true", help="do not store the run")
    h.add_argument("--database-url", help="default: MODELBENCH_DATABASE_URL, else the SQLite file")
    h.set_defaults(func=run)
