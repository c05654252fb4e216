"""Constrained against unconstrained decoding, same batch size, same run.

B chat prompts each generate exactly T tokens, three ways, on the default
model (or --model), greedy:

  free      no constraint (ignore_eos, so every request runs T tokens)
  mixed     half the batch held to a JSON Schema, half free, in one batch
  guided    every request held to the schema

The schema asks for an array of at least 40 small objects, so no guided
request can finish before T tokens: every run does the same work, and
tokens/s compares like with like. Each way runs --repeats times in turn
(free, mixed, guided, free, ...) and the median counts. The issue's target:
guided and mixed at least 0.9x free's tokens/s.

    python benchmarks/structured_outputs.py --out results.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from _report import cpu_model, emit
from modelbench import LLM, GuidedDecodingParams, SamplingParams

SCHEMA = {
    "type": "array",
    "minItems": 40,
    "maxItems": 60,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 2},
        },
        "required": ["name", "score", "tags"],
        "additionalProperties": False,
    },
}
TOPICS = ["cities", "rivers", "books", "planets", "songs", "animals", "colors", "tools"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    llm = LLM(args.model, max_model_len=1024, max_num_seqs=max(args.batch, 1))
    tokenizer = llm.get_tokenizer()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"List {TOPICS[i % len(TOPICS)]} as JSON with scores."}]
        )
        for i in range(args.batch)
    ]
    free = SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    guided = SamplingParams(
        temperature=0.0, max_tokens=args.tokens, guided=GuidedDecodingParams(json=SCHEMA)
    )
    ways = {
        "free": [free] * args.batch,
        "mixed": [guided if i % 2 == 0 else free for i in range(args.batch)],
        "guided": [guided] * args.batch,
    }
    llm.generate(prompts[:2], [free, guided], use_tqdm=False)  # warm-up (and the grammar's compile)

    runs: dict[str, list[dict]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, params in ways.items():
            steps_before = llm.engine.stats().num_steps
            started = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            seconds = time.perf_counter() - started
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            short = [
                o.outputs[0].finish_reason
                for o in outs
                if len(o.outputs[0].token_ids) < args.tokens
            ]
            runs[name].append(
                {
                    "seconds": seconds,
                    "output_tokens": tokens,
                    "tokens_per_s": tokens / seconds,
                    "steps": llm.engine.stats().num_steps - steps_before,
                    "ended_early": short,
                }
            )
    median = {name: statistics.median(r["tokens_per_s"] for r in rs) for name, rs in runs.items()}
    result = {
        "benchmark": "structured_outputs",
        "host": cpu_model(),
        "model": llm.model_source if args.model is None else args.model,
        "batch": args.batch,
        "tokens_per_request": args.tokens,
        "median_tokens_per_s": median,
        "ratio_to_free": {name: median[name] / median["free"] for name in ways},
        "target_ratio": 0.9,
        "runs": runs,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
