"""Where a step's time goes, on the default model (or --model), CPU.

For decode steps at batch 1 and at --batch (context --context), measured in
one run:
  - the engine's split: scheduling, the runner (inputs, forward, logits and
    sampling), the scheduler's update (EngineStats timers);
  - inside the runner, torch.profiler's view: input preparation, the forward
    by part (linear layers, paged attention, KV writes, RMSNorm, rotary,
    other ops), logits and sampling;
  - Python: LLM.generate over the same decodes, wall time against the
    engine's own time; the rest is Python's output processing.

Prints JSON (and writes it with --out). Never asserts on time.

    python benchmarks/profile_step.py --out profile.json
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from _report import emit  # benchmarks/_report.py (this folder is on sys.path)
from modelbench import LLM, SamplingParams

# Profiler scopes recorded by the C++ runner and layers (RECORD_FUNCTION):
# modelbench::prepare_inputs, ::forward, ::logits_and_sampling,
# ::packed_linear, ::quant_linear, ::paged_attention, ::kv_write, ::rms_norm, ::rotary, ::lm_head,
# and the fused float32 CPU ops ::add_rms_norm (residual add + RMSNorm) and ::silu_mul.


def add_decodes(llm: LLM, batch: int, context: int, steps: int, tag: str) -> None:
    rng = random.Random(batch)
    params = SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True).to_core()
    for i in range(batch):
        prompt = [rng.randrange(100, llm.config.vocab_size) for _ in range(context)]
        llm.engine.add_request(f"{tag}-{i}", prompt, params)


def run_prefills(llm: LLM) -> None:
    """Steps until every prompt token is computed; the rest are pure decodes."""
    while True:
        before = llm.engine.stats().num_prompt_tokens
        llm.engine.step()
        if llm.engine.stats().num_prompt_tokens == before:
            return


def profile_decodes(llm: LLM, batch: int, context: int, steps: int) -> dict:
    add_decodes(llm, batch, context, 2 * steps + 8, f"p{batch}")
    run_prefills(llm)
    for _ in range(3):  # warm
        llm.engine.step()
    before = llm.engine.stats()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        llm.engine.step()
        times.append(time.perf_counter() - started)
    after = llm.engine.stats()
    num_steps = after.num_steps - before.num_steps
    engine = {
        "schedule_ms": (after.schedule_seconds - before.schedule_seconds) / num_steps * 1e3,
        "runner_ms": (after.execute_seconds - before.execute_seconds) / num_steps * 1e3,
        "update_ms": (after.update_seconds - before.update_seconds) / num_steps * 1e3,
    }
    # The profiled steps are timed too: the breakdown adds up to their wall time.
    profiled = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            started = time.perf_counter()
            llm.engine.step()
            profiled.append(time.perf_counter() - started)
    while llm.engine.has_unfinished_requests():
        llm.engine.step()
    events = {e.key: e for e in prof.key_averages()}
    num_forward = events["modelbench::forward"].count
    total = {k: e.cpu_time_total / 1e3 / num_forward for k, e in events.items()}  # ms per step
    forward = total.get("modelbench::forward", 0.0)
    # Linear layers: the packed CPU kernel (float32), the quantized one, else aten::linear
    # (which includes its mm). (The head's own linear runs after the forward, in
    # logits_and_sampling.)
    linear = (
        total.get("modelbench::packed_linear", 0.0)
        + total.get("modelbench::quant_linear", 0.0)
        + total.get("aten::linear", 0.0)
        - total.get("modelbench::lm_head", 0.0)
    )
    parts = {
        "linear_ms": linear,
        "paged_attention_ms": total.get("modelbench::paged_attention", 0.0),
        "kv_write_ms": total.get("modelbench::kv_write", 0.0),
        # Norms, with the residual adds fused into them (float32 on the CPU).
        "rms_norm_ms": total.get("modelbench::rms_norm", 0.0)
        + total.get("modelbench::add_rms_norm", 0.0),
        "rotary_ms": total.get("modelbench::rotary", 0.0),
        "silu_mul_ms": total.get("modelbench::silu_mul", 0.0),
    }
    parts["other_ms"] = forward - sum(parts.values())
    return {
        "batch": batch,
        "context": context,
        "num_steps_timed": len(times),
        "median_step_ms": statistics.median(times) * 1e3,
        "median_profiled_step_ms": statistics.median(profiled) * 1e3,
        "engine": engine,
        "runner": {
            "prepare_inputs_ms": total.get("modelbench::prepare_inputs", 0.0),
            "forward_ms": forward,
            "logits_and_sampling_ms": total.get("modelbench::logits_and_sampling", 0.0),
            "of_which_lm_head_ms": total.get("modelbench::lm_head", 0.0),
        },
        "forward_parts": parts,
        "forward_per_layer_ms": forward / llm.runner.spec.num_layers,
    }


def python_overhead(llm: LLM, batch: int, context: int, steps: int) -> dict:
    """LLM.generate over decodes: wall time minus the engine's own time."""
    rng = random.Random(7)
    prompts = [
        [rng.randrange(100, llm.config.vocab_size) for _ in range(context)] for _ in range(batch)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True)
    before = llm.engine.stats()
    started = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - started
    after = llm.engine.stats()
    engine_s = sum(
        getattr(after, k) - getattr(before, k)
        for k in ("schedule_seconds", "execute_seconds", "update_seconds")
    )
    num_steps = after.num_steps - before.num_steps
    return {
        "batch": batch,
        "steps": num_steps,
        "wall_s": wall,
        "engine_s": engine_s,
        "python_ms_per_step": (wall - engine_s) / num_steps * 1e3,
        "python_fraction": (wall - engine_s) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--out")
    args = parser.parse_args()

    llm = LLM(
        args.model,
        dtype=args.dtype,
        max_model_len=args.context + args.steps + 64,
        max_num_seqs=max(args.batch, 1),
        kv_cache_memory=1024**3,
    )
    result = {
        "benchmark": "profile_step",
        "model": args.model or "SmolLM2-135M-Instruct (default)",
        "dtype": args.dtype,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "decode": [profile_decodes(llm, b, args.context, args.steps) for b in (1, args.batch)],
        "python": python_overhead(llm, args.batch, 64, 64),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
