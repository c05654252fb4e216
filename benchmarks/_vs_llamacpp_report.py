"""The report of benchmarks/vs_llamacpp.py: ratios against the issue's
targets, the markdown table, and the files (JSON, and the table beside it)."""

from __future__ import annotations

import json
from pathlib import Path

# The targets, modelbench / llama.cpp unless said otherwise.
DECODE_TARGET = 1.3  # batch-1 decode tok/s against tg128
PREFILL_TARGET = 2.0  # prefill tok/s against pp512
SERVED_TARGET_LOW, SERVED_TARGET_HIGH, HIGH_CONCURRENCY = 1.0, 2.0, 16  # output tok/s
TTFT_TARGET = 1.0  # median TTFT: no worse
WEIGHTS_RSS_TARGET = 1.2  # resident weights / GGUF file size, modelbench's own


def served_target(concurrency: int) -> float:
    return SERVED_TARGET_HIGH if concurrency >= HIGH_CONCURRENCY else SERVED_TARGET_LOW


def compare(result: dict) -> dict:
    """modelbench / llama.cpp for each figure the run measured, with its target and verdict."""
    out: dict = {}
    inproc = result.get("in_process")
    if inproc:
        for kind, target in (("decode", DECODE_TARGET), ("prefill", PREFILL_TARGET)):
            ours, theirs = inproc["modelbench"][kind], inproc["llamacpp"][kind]
            ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
            out[kind] = {"ratio": ratio, "target": target, "met": ratio >= target}
    served = result.get("served")
    if served and "modelbench" in served and "llamacpp" in served:
        out["served"] = {}
        for level, ours in served["modelbench"].items():
            theirs = served["llamacpp"][level]
            throughput = ours["output_throughput"] / theirs["output_throughput"]
            ttft = ours["median_ttft_ms"] / theirs["median_ttft_ms"]
            out["served"][level] = {
                "throughput_ratio": throughput,
                "throughput_target": served_target(int(level)),
                "throughput_met": throughput >= served_target(int(level)),
                "median_ttft_ratio": ttft,
                "median_ttft_target": TTFT_TARGET,
                "median_ttft_met": ttft <= TTFT_TARGET,
                "median_tpot_ratio": ours["median_tpot_ms"] / theirs["median_tpot_ms"],
            }
    memory = result.get("memory")
    if memory:
        file_bytes = result["model"]["file_bytes"]
        ours = memory["modelbench"]["weights_rss_bytes"] / file_bytes
        out["memory"] = {
            "modelbench_over_file": ours,
            "llamacpp_over_file": memory["llamacpp"]["weights_rss_bytes"] / file_bytes,
            "target": WEIGHTS_RSS_TARGET,
            "met": ours <= WEIGHTS_RSS_TARGET,
        }
    return out


def _met(flag: bool) -> str:
    return "yes" if flag else "no"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def markdown_table(result: dict) -> str:
    """The run as a markdown table: each figure for both, the ratio, the target, met or not."""
    host, comparison = result["host"], result["comparison"]
    llama = result["llamacpp"]
    lines = [
        f"# modelbench vs llama.cpp ({Path(result['model']['path']).name})",
        "",
        f"- date: {host['date']}; threads: {result['threads']} for both; load average "
        + " / ".join(
            f"{host[k][0]:.2f}"
            for k in ("load_average_at_start", "load_average_at_end")
            if k in host
        )
        + " (1 min, at start / at end)",
        f"- CPU: {host['cpu']} ({host['cpu_count']} CPUs); flags: "
        + " ".join(f for f in host["cpu_flags"] if f.startswith(("avx", "amx", "fma", "f16c"))),
        f"- llama.cpp {llama.get('commit')} (llama-cpp-python {llama.get('llama_cpp_python')})",
        "",
        "| measure | modelbench | llama.cpp | modelbench / llama.cpp | target | met |",
        "|---|---:|---:|---:|---:|---|",
    ]
    inproc = result.get("in_process")
    if inproc:
        for kind, label in (("decode", "decode tok/s, batch 1"), ("prefill", "prefill tok/s")):
            ours, theirs = inproc["modelbench"][kind], inproc["llamacpp"][kind]
            c = comparison[kind]
            lines.append(
                f"| {label} (vs {theirs['test']}) | {ours['tokens_per_s']:.1f}"
                f" | {theirs['tokens_per_s']:.1f} | {c['ratio']:.2f}x | >= {c['target']:g}x"
                f" | {_met(c['met'])} |"
            )
    served = result.get("served")
    if "served" in comparison:
        for level, c in comparison["served"].items():
            ours, theirs = served["modelbench"][level], served["llamacpp"][level]
            lines += [
                f"| served c={level}: output tok/s | {ours['output_throughput']:.1f}"
                f" | {theirs['output_throughput']:.1f} | {c['throughput_ratio']:.2f}x"
                f" | >= {c['throughput_target']:g}x | {_met(c['throughput_met'])} |",
                f"| served c={level}: median TTFT ms | {ours['median_ttft_ms']:.1f}"
                f" | {theirs['median_ttft_ms']:.1f} | {c['median_ttft_ratio']:.2f}x"
                f" | <= {c['median_ttft_target']:g}x | {_met(c['median_ttft_met'])} |",
                f"| served c={level}: median TPOT ms | {ours['median_tpot_ms']:.1f}"
                f" | {theirs['median_tpot_ms']:.1f} | {c['median_tpot_ratio']:.2f}x | | |",
            ]
    if result.get("served_error"):
        lines.append(f"| served: failed ({result['served_error'][:300]}) | | | | | no |")
    c = comparison.get("memory")
    if c:
        ours, theirs = (
            result["memory"][k]["weights_rss_bytes"] for k in ("modelbench", "llamacpp")
        )
        lines.append(
            f"| weights RSS MB (file {_mb(result['model']['file_bytes'])} MB)"
            f" | {_mb(ours)} ({c['modelbench_over_file']:.2f}x file)"
            f" | {_mb(theirs)} ({c['llamacpp_over_file']:.2f}x file) | {ours / theirs:.2f}x"
            f" | <= {c['target']:g}x file | {_met(c['met'])} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, table: str, out: Path) -> Path:
    """The JSON at ``out`` and the table beside it (same name, .md); the table's path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = out.with_suffix(".md")
    md.write_text(table)
    return md
