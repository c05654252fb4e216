"""modelbench against llama.cpp: one run, the same GGUF file, the same thread count.

llama.cpp is built once from llama-cpp-python's sdist (benchmarks/_llamacpp.py)
into a cache folder and reused. Then, one after the other, never at once:

  in-process  llama-bench -p 512 -n 128 -r R (pp512: prompt tok/s; tg128:
              batch-1 decode tok/s, generation time only) against modelbench's
              LLM in this process: decode is 128 tokens generated after a
              one-token prompt (128 forward passes of one token, as tg128),
              EOS ignored; prefill is a 512-token prompt of random ids with
              max_tokens=1 (its time to first token). R repetitions, median.
  served      `modelbench serve` and `llama-server -np 16 -c 16384`, each
              driven by `modelbench bench --backend modelbench` (streamed
              /v1/completions with ignore_eos) on the same workload: random
              dataset, 256 input and 128 output tokens, 32 prompts, at each
              concurrency (new prompts at each level, the same for both).
              Every request must produce exactly 128 tokens.
  memory      (with the in-process part) resident memory of the weights:
              modelbench's, in a fresh process, RSS after LLM() minus a
              no-model baseline (the same imports, the model's tokenizer and
              config loaded, its weights dropped) minus the bytes of its KV
              pool (zero-filled at load); llama-server's (-np 16 -c 16384, loaded,
              not timed) resident pages of the GGUF file it maps plus the
              weights it repacked into buffers of its own. Each against the
              GGUF file's size.

Writes JSON (--out) and a markdown table beside it (.md), printed too. The
issue's targets are columns of the table (met or not); nothing is asserted.

    python benchmarks/vs_llamacpp.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import _llamacpp as llamacpp  # benchmarks/_llamacpp.py (this folder is on sys.path)
from _vs_llamacpp_report import compare, markdown_table, write_outputs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "vs_llamacpp_cpu.json"
PROMPT_TOKENS, GEN_TOKENS = 512, 128  # llama-bench's pp512 and tg128
SERVED_INPUT_LEN, SERVED_OUTPUT_LEN = 256, 128
LLAMA_SERVER_PARALLEL, LLAMA_SERVER_CTX = 16, 16384


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a .gguf file (default: the default model's)")
    parser.add_argument("--threads", type=int, default=2, help="for both (default 2)")
    parser.add_argument("--repetitions", type=int, default=5, help="in-process runs of each test")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--num-prompts", type=int, default=32, help="served: prompts per level")
    parser.add_argument(
        "--kv-cache-memory",
        type=int,
        default=64 * 1024**2,
        help="bytes of KV cache of the in-process LLM (default 64 MiB)",
    )
    parser.add_argument("--skip-served", action="store_true")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON; the table goes to .md")
    parser.add_argument("--llamacpp-version", default=llamacpp.DEFAULT_VERSION)
    parser.add_argument(
        "--llamacpp-dir",
        type=Path,
        help="where llama.cpp is built and reused "
        "(default ~/.cache/modelbench/llamacpp/<llamacpp-version>[-amx])",
    )
    parser.add_argument(
        "--llamacpp-amx",
        action="store_true",
        help="build llama.cpp with its AMX kernels (off by default: they segfault on our host, "
        "see benchmarks/_llamacpp.py)",
    )
    parser.add_argument(
        "--llamacpp-sdist", type=Path, help="llama-cpp-python's sdist (default: pip download)"
    )
    parser.add_argument("--build-jobs", type=int, default=None, help="default: every CPU")
    args = parser.parse_args(argv)
    for name in ("threads", "repetitions", "num_prompts", "kv_cache_memory"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for level in args.concurrency:
        if level < 1:
            parser.error(f"--concurrency values must be >= 1, got {level}")
    if args.skip_served and args.skip_inprocess:
        parser.error("--skip-served and --skip-inprocess together leave nothing to measure")
    if args.model is not None:
        if not args.model.is_file():
            parser.error(f"--model {args.model}: no such file")
        if args.model.suffix != ".gguf":
            parser.error(f"--model {args.model}: llama.cpp reads .gguf files only")
    if args.out.suffix != ".json":
        parser.error(f"--out {args.out}: must end in .json (the table goes beside it as .md)")
    if args.llamacpp_sdist is not None and not args.llamacpp_sdist.is_file():
        parser.error(f"--llamacpp-sdist {args.llamacpp_sdist}: no such file")
    return args


def host_info() -> dict:
    """CPU model and flags from /proc/cpuinfo, the date, and the load average: anything
    else running on the CPUs slows llama.cpp's spinning threads far more than it slows us."""
    cpu = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "flags") and key.strip() not in cpu:
            cpu[key.strip()] = value.strip()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu.get("model name", platform.processor()),
        "cpu_flags": cpu.get("flags", "").split(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def inprocess_llamacpp(llama: llamacpp.LlamaCpp, model: Path, args: argparse.Namespace) -> dict:
    records = llamacpp.run_llama_bench(
        llama, model, args.threads, PROMPT_TOKENS, GEN_TOKENS, args.repetitions
    )
    return llama_bench_summary(records)


def llama_bench_summary(records: list[dict]) -> dict:
    """llama-bench's pp and tg records as prefill and decode tok/s (median of its samples)."""
    out = {}
    for record in records:
        kind = "prefill" if record["n_gen"] == 0 else "decode"
        samples = record["samples_ts"]
        out[kind] = {
            "test": f"pp{record['n_prompt']}" if kind == "prefill" else f"tg{record['n_gen']}",
            "tokens_per_s": statistics.median(samples),
            "mean_tokens_per_s": record["avg_ts"],
            "samples_tokens_per_s": samples,
        }
    out["build"] = {k: records[0].get(k) for k in ("build_commit", "build_number", "cpu_info")}
    out["build"]["type_k"] = records[0].get("type_k")
    return out


def inprocess_modelbench(model: Path, args: argparse.Namespace) -> dict:
    """Decode and prefill tok/s of LLM in this process, and its RSS for the weights."""
    import torch

    from modelbench import LLM, SamplingParams

    torch.set_num_threads(args.threads)
    llm = LLM(
        str(model),
        max_model_len=PROMPT_TOKENS + GEN_TOKENS + 16,
        kv_cache_memory=args.kv_cache_memory,
    )
    tokenizer = llm.get_tokenizer()
    rng = random.Random(args.seed)

    def seconds(ids: list[int], max_tokens: int) -> float:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        started = time.perf_counter()
        (out,) = llm.generate([ids], params, use_tqdm=False)
        elapsed = time.perf_counter() - started
        if len(out.outputs[0].token_ids) != max_tokens:
            raise RuntimeError(
                f"modelbench generated {len(out.outputs[0].token_ids)} tokens, not {max_tokens}"
            )
        return elapsed

    def random_prompt() -> list[int]:  # a new one each time: nothing for the prefix cache
        return [rng.randrange(100, tokenizer.vocab_size) for _ in range(PROMPT_TOKENS)]

    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 100
    seconds([first], GEN_TOKENS)  # warm-up, as llama-bench's
    decode = [GEN_TOKENS / seconds([first], GEN_TOKENS) for _ in range(args.repetitions)]
    seconds(random_prompt(), 1)
    prefill = [PROMPT_TOKENS / seconds(random_prompt(), 1) for _ in range(args.repetitions)]
    return {
        "decode": {"tokens_per_s": statistics.median(decode), "samples_tokens_per_s": decode},
        "prefill": {"tokens_per_s": statistics.median(prefill), "samples_tokens_per_s": prefill},
        "torch_threads": torch.get_num_threads(),
    }


# Run in a fresh interpreter each: what is resident after the same imports and
# the same tokenizer and config, with and without the weights.
_PROBE = """
import json, os, sys
import torch
torch.set_num_threads(int(sys.argv[2]))
from modelbench import LLM
from modelbench.engine.engine_args import release_freed_memory
from modelbench.models.loader import load_checkpoint
def rss():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
out = {"imports": rss()}
checkpoint = load_checkpoint(sys.argv[1], keep_quantized=True)
checkpoint.weights = {}
release_freed_memory()
out["tokenizer_and_config"] = rss()
del checkpoint
llm = LLM(sys.argv[1], max_model_len=int(sys.argv[3]), kv_cache_memory=int(sys.argv[4]))
out["loaded"] = rss()  # LLM() trims the heap itself (build_engine)
out["kv_cache_bytes"] = llm.runner.kv_cache_bytes
print(json.dumps(out))
"""


def modelbench_memory(model: Path, args: argparse.Namespace) -> dict:
    """Resident bytes of the weights as LLM() holds them: RSS after LLM() minus a no-model
    baseline (the same interpreter after the same imports and the model's tokenizer and
    config, loaded and the weights dropped) minus the KV pool's bytes. Measured in a fresh
    process, so nothing this benchmark ran before counts."""
    max_model_len = PROMPT_TOKENS + GEN_TOKENS + 16
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(model),
            str(args.threads),
            str(max_model_len),
            str(args.kv_cache_memory),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    rss = json.loads(probe.stdout.strip().splitlines()[-1])
    # The probe drops the first load's tokenizer before LLM() loads its own: one each side.
    weights = rss["loaded"] - rss["tokenizer_and_config"] - rss["kv_cache_bytes"]
    return {
        "rss_after_imports_bytes": rss["imports"],
        "rss_no_model_baseline_bytes": rss["tokenizer_and_config"],
        "rss_after_load_bytes": rss["loaded"],
        "kv_cache_bytes": rss["kv_cache_bytes"],
        "weights_rss_bytes": weights,
        "tokenizer_and_config_rss_bytes": rss["tokenizer_and_config"] - rss["imports"],
        "method": "in a fresh process: RSS after LLM() (which trims the heap) - RSS with the "
        "tokenizer and config loaded (weights dropped, freed memory trimmed) - the KV pool's bytes",
    }


def start_modelbench_server(
    model: Path, args: argparse.Namespace, port: int, workdir: Path
) -> subprocess.Popen:
    command = [sys.executable, "-m", "modelbench", "serve", "--port", str(port)]
    command += ["--served-model-name", "bench", "--log-level", "warning"]
    command += ["--database-url", f"sqlite:///{workdir / 'store.db'}"]
    if args.model is not None:
        command[4:4] = ["--model", str(model)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with open(workdir / "modelbench-serve.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        llamacpp.wait_ready(server, f"http://127.0.0.1:{port}/ready", "modelbench serve")
    except BaseException:
        llamacpp.stop(server)
        raise
    return server


def warm_up(base_url: str) -> None:
    body = {"model": "bench", "prompt": "Hello", "max_tokens": 8, "ignore_eos": True}
    request = urllib.request.Request(
        base_url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()


def drive(base_url: str, model: Path, args: argparse.Namespace, workdir: Path) -> list[dict]:
    """`modelbench bench` at each concurrency against one server; its result dicts. Each
    level has prompts of its own (seed + its index): the same prompts again would be answered
    from the prefix cache of both servers (ours keeps every block; llama-server a prompt per
    slot), and the later levels would measure the cache."""
    runs = []
    for index, level in enumerate(args.concurrency):
        result_file = workdir / f"bench-{level}.json"
        command = [sys.executable, "-m", "modelbench", "bench", "--backend", "modelbench"]
        command += ["--base-url", base_url, "--model", "bench", "--tokenizer", str(model)]
        command += ["--dataset", "random", "--num-prompts", str(args.num_prompts)]
        command += ["--random-input-len", str(SERVED_INPUT_LEN)]
        command += ["--random-output-len", str(SERVED_OUTPUT_LEN)]
        command += ["--seed", str(args.seed + index), "--max-concurrency", str(level)]
        command += ["--result-file", str(result_file), "--no-progress"]
        subprocess.run(command, check=True, stdout=sys.stderr)
        runs.append(json.loads(result_file.read_text()))
    return runs


def served_summary(server: str, runs: list[dict], output_len: int = SERVED_OUTPUT_LEN) -> dict:
    """Per concurrency: throughput, median TPOT and TTFT. Raises unless every
    request succeeded with exactly ``output_len`` tokens."""
    out = {}
    for run in runs:
        level = run["max_concurrency"]
        wrong = [n for n in run["output_lens"] if n != output_len]
        if run["failed"] or wrong:
            raise RuntimeError(
                f"{server} at concurrency {level}: {run['failed']} failed requests "
                f"({run.get('errors_by_kind')}), {len(wrong)} with other than {output_len} "
                f"output tokens ({sorted(set(wrong))}); the comparison needs every request "
                "to generate exactly its output length"
            )
        out[str(level)] = {
            "output_throughput": run["output_throughput"],
            "median_tpot_ms": run["median_tpot_ms"],
            "median_ttft_ms": run["median_ttft_ms"],
            "completed": run["completed"],
            "total_output_tokens": run["total_output_tokens"],
            "duration_s": run["duration"],
        }
    return out


def served(llama: llamacpp.LlamaCpp, model: Path, args: argparse.Namespace, result: dict) -> None:
    """Both servers, one after the other, each on the same bench workload. Fills ``result``
    as it goes: a failure keeps what was measured before it."""
    result["workload"] = {
        "dataset": "random",
        "input_len": SERVED_INPUT_LEN,
        "output_len": SERVED_OUTPUT_LEN,
        "num_prompts": args.num_prompts,
        "concurrency": args.concurrency,
        "seeds": [args.seed + index for index in range(len(args.concurrency))],
        "ignore_eos": True,
    }
    result["llama_server_args"] = {
        "parallel": LLAMA_SERVER_PARALLEL,
        "ctx": LLAMA_SERVER_CTX,
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory(prefix="vs_llamacpp_") as tmp:
        workdir = Path(tmp)
        port = llamacpp.free_port()
        server = start_modelbench_server(model, args, port, workdir)
        try:
            rss = llamacpp.rss_bytes(server.pid)
            warm_up(f"http://127.0.0.1:{port}")
            runs = drive(f"http://127.0.0.1:{port}", model, args, workdir)
        finally:
            llamacpp.stop(server)
        result["rss_after_ready_bytes"] = {"modelbench": rss}
        result["modelbench"] = served_summary("modelbench serve", runs)

        port = llamacpp.free_port()
        log = workdir / "llama-server.log"
        server = llamacpp.start_llama_server(
            llama, model, args.threads, LLAMA_SERVER_PARALLEL, LLAMA_SERVER_CTX, port, log
        )
        try:
            rss = llamacpp.rss_bytes(server.pid)
            warm_up(f"http://127.0.0.1:{port}")
            runs = drive(f"http://127.0.0.1:{port}", model, args, workdir)
        finally:
            llamacpp.stop(server)
        result["rss_after_ready_bytes"]["llamacpp"] = rss
        result["llamacpp"] = served_summary("llama-server", runs)


def modelbench_build() -> dict:
    """Which modelbench ran (the package's folder: an installed one or the
    source tree) and its quantized kernel set, as `modelbench serve` also
    picks it (MODELBENCH_ISA or the best the CPU runs)."""
    import modelbench
    from modelbench import _core

    return {
        "package": str(Path(modelbench.__file__).parent),
        "quant_kernels": _core.testing.active_quant_isa(),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.model is None:
        from modelbench.models.default_model import default_model_path

        model = default_model_path()
    else:
        model = args.model.resolve()
    root = args.llamacpp_dir or llamacpp.default_cache_dir(args.llamacpp_version, args.llamacpp_amx)
    llama = llamacpp.ensure_built(
        args.llamacpp_version, root, args.llamacpp_sdist, args.build_jobs, args.llamacpp_amx
    )
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    result: dict = {
        "benchmark": "vs_llamacpp",
        "host": host_info(),
        "model": {"path": str(model), "file_bytes": model.stat().st_size},
        "threads": args.threads,
        "llamacpp": llama.info,
        "modelbench": modelbench_build(),
    }
    if not args.skip_inprocess:
        theirs = inprocess_llamacpp(llama, model, args)
        with tempfile.TemporaryDirectory(prefix="vs_llamacpp_") as tmp:
            theirs_memory = llamacpp.llama_server_memory(
                llama, model, args.threads, LLAMA_SERVER_PARALLEL, LLAMA_SERVER_CTX, Path(tmp)
            )
        ours_memory = modelbench_memory(model, args)
        ours = inprocess_modelbench(model, args)
        result["in_process"] = {
            "repetitions": args.repetitions,
            "llamacpp": theirs,
            "modelbench": ours,
        }
        result["memory"] = {"modelbench": ours_memory, "llamacpp": theirs_memory}
    failure = None
    if not args.skip_served:
        result["served"] = {}
        try:
            served(llama, model, args, result["served"])
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            failure = result["served_error"] = str(exc)  # what was measured is still written
    result["host"]["load_average_at_end"] = os.getloadavg()
    result["comparison"] = compare(result)
    table = markdown_table(result)
    write_outputs(result, table, args.out)
    print(table)
    if failure:
        raise SystemExit(f"vs_llamacpp: the served comparison failed: {failure}")


if __name__ == "__main__":
    main()
