"""A short demo of the engine: the default model answers a few questions in one batch.

python -m modelbench.demo [--max-tokens N] [--model PATH]
"""

from __future__ import annotations

import argparse
import time

from modelbench.engine.llm import LLM
from modelbench.engine.sampling_params import SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence what a KV cache is.",
    "Name three prime numbers.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default=None, help="HF folder or .gguf file (default: SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    started = time.perf_counter()
    llm = LLM(args.model, max_model_len=2048)
    print(
        f"loaded {llm.model_source} ({llm.architecture}) in {time.perf_counter() - started:.1f} s"
    )

    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    started = time.perf_counter()
    outputs = llm.chat(
        [[{"role": "user", "content": q}] for q in QUESTIONS], params, use_tqdm=False
    )
    elapsed = time.perf_counter() - started
    num_tokens = 0
    for question, out in zip(QUESTIONS, outputs):
        completion = out.outputs[0]
        num_tokens += len(completion.token_ids)
        print(f"\n> {question}\n{completion.text.strip()}  [{completion.finish_reason}]")
    stats = llm.engine.stats()
    print(
        f"\n{len(QUESTIONS)} requests, {num_tokens} tokens in {elapsed:.2f} s "
        f"({num_tokens / elapsed:.1f} tokens/s, {stats.num_steps} engine steps, batched)"
    )


if __name__ == "__main__":
    main()
