"""Batch-1 decode with and without n-gram speculation, same run, same weights.

Two engines on the default model (or --model), one plain, one with
speculative_config {"method": "ngram", "num_speculative_tokens": K,
"prompt_lookup_max": N}. Each prompt runs greedy, one request at a time,
--repeats times on each engine in turn; the best time of each counts.
Two kinds of work:

  input-grounded   copy a given text, copy given code, fix the typos in
                   given code: the answer repeats much of the prompt, so
                   the n-gram lookups hit
  open-ended       chat questions with nothing to copy

For every prompt the two engines' token ids must be identical (greedy): the
script records whether they are. Targets (the issue's): input-grounded at
least 1.5x, open-ended no worse than 0.95x.

    python benchmarks/spec_decode.py --out results.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _report import cpu_model, emit
from modelbench import LLM, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "docs" / "architecture.md").read_text()[:1500]
CODE = (ROOT / "python" / "modelbench" / "engine" / "guided.py").read_text()[1800:3300]


def workload(llm: LLM) -> dict[str, dict[str, str]]:
    chat = llm.get_tokenizer().apply_chat_template
    return {
        "input_grounded": {
            "copy_text": f"{TEXT}\n\nThe same text, copied exactly:\n\n{TEXT[:60]}",
            "copy_code": (
                f"Here is some Python code:\n\n{CODE}\n\n"
                f"The same code, copied exactly:\n\n{CODE[:40]}"
            ),
            "edit_code": chat(
                [{"role": "user", "content": f"Fix the typos in this code and print it:\n\n{CODE}"}]
            ),
        },
        "open_ended": {
            "story": chat([{"role": "user", "content": "Write a story about a dragon."}]),
            "exercise": chat([{"role": "user", "content": "What are the benefits of exercise?"}]),
            "recipe": chat([{"role": "user", "content": "How do I bake bread at home?"}]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    parser.add_argument("--lookup-max", type=int, default=3, help="prompt_lookup_max")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    spec_config = {
        "method": "ngram",
        "num_speculative_tokens": args.k,
        "prompt_lookup_max": args.lookup_max,
    }
    common = dict(max_model_len=2048, kv_cache_memory=256 * 1024 * 1024)
    engines = {
        "plain": LLM(args.model, **common),
        "ngram": LLM(args.model, **common, speculative_config=spec_config),
    }
    params = SamplingParams(temperature=0.0, max_tokens=args.tokens)
    kinds = workload(engines["plain"])
    for llm in engines.values():  # warm-up
        llm.generate("Hello", SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)

    results: dict[str, dict] = {}
    for kind, prompts in kinds.items():
        for name, prompt in prompts.items():
            best = {e: float("inf") for e in engines}
            outputs: dict[str, list[int]] = {}
            for _ in range(args.repeats):
                for engine_name, llm in engines.items():
                    started = time.perf_counter()
                    out = llm.generate(prompt, params, use_tqdm=False)[0].outputs[0]
                    best[engine_name] = min(best[engine_name], time.perf_counter() - started)
                    outputs[engine_name] = list(out.token_ids)
            n = len(outputs["plain"])
            results[name] = {
                "kind": kind,
                "output_tokens": n,
                "plain_tokens_per_s": n / best["plain"],
                "ngram_tokens_per_s": len(outputs["ngram"]) / best["ngram"],
                "speedup": (len(outputs["ngram"]) / best["ngram"]) / (n / best["plain"]),
                "identical_greedy_output": outputs["plain"] == outputs["ngram"],
            }
    stats = engines["ngram"].engine.stats().scheduler
    summary = {
        kind: statistics.geometric_mean(r["speedup"] for r in results.values() if r["kind"] == kind)
        for kind in kinds
    }
    emit(
        {
            "benchmark": "spec_decode",
            "host": cpu_model(),
            "model": engines["plain"].model_source,
            "speculative_config": spec_config,
            "tokens_per_request": args.tokens,
            "speedup_geomean": summary,
            "targets": {"input_grounded": 1.5, "open_ended": 0.95},
            "all_identical": all(r["identical_greedy_output"] for r in results.values()),
            "acceptance_rate": stats.num_spec_accepted_tokens / max(1, stats.num_spec_draft_tokens),
            "accepted_tokens_per_draft": stats.num_spec_accepted_tokens
            / max(1, stats.num_spec_drafts),
            "prompts": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
