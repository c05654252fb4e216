"""Offline throughput: modelbench's LLM.generate against transformers, same weights, same run.

Workload (fixed seed): N prompts of random token ids, input lengths uniform
in [min_input, max_input], output lengths uniform in [min_output, max_output],
every request generating exactly its output length (ignore_eos). Three
contenders run it on the same weights and dtype:

  modelbench        LLM.generate, all prompts at once (continuous batching)
  hf_sequential     transformers generate, one request at a time
  hf_batched        transformers generate, padded static batches (left padding)

The transformers contenders cost hours on 2 cores at this size (about 90 ms
per token one request at a time), so --hf-sample N runs them on a random
sample of N requests (hf_sequential) and on the static batches that hold a
random sample of N requests (hf_batched), and scales their time to the whole
workload: one request at a time, and static batches, take time that adds up
request by request (batch by batch), so the sample's time per output token
is an unbiased estimate of the whole run's. The JSON says what was sampled;
--hf-sample 0 runs everything.

Prints a table and writes JSON (--out). Never asserts on time.

    python benchmarks/offline_throughput.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

import torch

from modelbench import LLM, SamplingParams
from modelbench.models import load_checkpoint
from modelbench.models.hf_reference import transformers_model


def workload(args: argparse.Namespace, vocab_size: int) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    requests = []
    for _ in range(args.num_prompts):
        n_in = rng.randint(args.min_input, args.max_input)
        n_out = rng.randint(args.min_output, args.max_output)
        # Avoid special tokens at the bottom of the vocabulary.
        requests.append(([rng.randrange(100, vocab_size) for _ in range(n_in)], n_out))
    return requests


def run_modelbench(args, requests) -> dict:
    llm = LLM(args.model, dtype=args.dtype, max_model_len=args.max_input + args.max_output + 8)
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for _, n in requests]
    llm.generate([ids for ids, _ in requests[:2]], params[:2], use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outs = llm.generate([ids for ids, _ in requests], params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    num_out = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"seconds": elapsed, "output_tokens": num_out, "steps": llm.engine.stats().num_steps}


@torch.inference_mode()
def run_hf_sequential(model, requests, sample: list[int]) -> dict:
    started = time.perf_counter()
    num_out = 0
    for ids, n in (requests[i] for i in sample):
        x = torch.tensor([ids])
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
        num_out += out.shape[1] - len(ids)
    return scaled(time.perf_counter() - started, num_out, requests, len(sample))


@torch.inference_mode()
def run_hf_batched(model, requests, batch_size: int, batch_starts: list[int]) -> dict:
    started = time.perf_counter()
    num_out = 0
    for i in batch_starts:
        batch = requests[i : i + batch_size]
        width = max(len(ids) for ids, _ in batch)
        n = max(m for _, m in batch)  # a static batch runs until its longest request is done
        x = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(x)
        for row, (ids, _) in enumerate(batch):
            x[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        model.generate(
            x,
            attention_mask=mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
        num_out += sum(m for _, m in batch)  # tokens the requests asked for
    num_run = sum(len(requests[i : i + batch_size]) for i in batch_starts)
    return scaled(time.perf_counter() - started, num_out, requests, num_run)


def scaled(seconds: float, num_out: int, requests, num_run: int) -> dict:
    """The sample's time per output token, applied to every output token of the workload."""
    total_out = sum(n for _, n in requests)
    return {
        "seconds": seconds * total_out / num_out,
        "output_tokens": total_out,
        "measured": {
            "requests": num_run,
            "of": len(requests),
            "seconds": seconds,
            "output_tokens": num_out,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--num-prompts", type=int, default=128)
    parser.add_argument("--min-input", type=int, default=64)
    parser.add_argument("--max-input", type=int, default=512)
    parser.add_argument("--min-output", type=int, default=64)
    parser.add_argument("--max-output", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="hf_batched batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sequential", action="store_true", help="the slowest contender")
    parser.add_argument(
        "--hf-sample",
        type=int,
        default=32,
        help="run the transformers contenders on a random sample of this many "
        "requests and scale (0: all of them)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.model, dtype=getattr(torch, args.dtype))
    requests = workload(args, int(checkpoint.hf_config["vocab_size"]))
    results = {"modelbench": run_modelbench(args, requests)}
    model = transformers_model(checkpoint, getattr(torch, args.dtype))
    with torch.inference_mode():  # warm-up, as for modelbench
        warm = torch.tensor([requests[0][0][:16]])
        model.generate(
            warm,
            attention_mask=torch.ones_like(warm),
            max_new_tokens=2,
            do_sample=False,
            pad_token_id=0,
        )
    rng = random.Random(args.seed + 1)
    everything = args.hf_sample <= 0 or args.hf_sample >= len(requests)
    sample = (
        list(range(len(requests)))
        if everything
        else sorted(rng.sample(range(len(requests)), args.hf_sample))
    )
    starts = list(range(0, len(requests), args.batch_size))
    if not everything:  # whole static batches, as many as hold the sample's size
        starts = sorted(rng.sample(starts, max(1, -(-args.hf_sample // args.batch_size))))
    results["hf_batched"] = run_hf_batched(model, requests, args.batch_size, starts)
    if not args.skip_sequential:
        results["hf_sequential"] = run_hf_sequential(model, requests, sample)

    for r in results.values():
        r["output_tokens_per_s"] = r["output_tokens"] / r["seconds"]
    base = results["modelbench"]["output_tokens_per_s"]
    report = {
        "workload": vars(args),
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "results": results,
        "ratios": {
            f"modelbench_vs_{k}": base / v["output_tokens_per_s"]
            for k, v in results.items()
            if k != "modelbench"
        },
    }
    print(f"{'contender':<16}{'seconds':>10}{'out tokens':>12}{'tok/s':>10}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['seconds']:>10.1f}{r['output_tokens']:>12}{r['output_tokens_per_s']:>10.1f}"
        )
    for name, ratio in report["ratios"].items():
        print(f"{name}: {ratio:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
