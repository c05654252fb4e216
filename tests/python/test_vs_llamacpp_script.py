"""benchmarks/vs_llamacpp.py without llama.cpp: its arguments, its reading of
llama-bench's records, llama-server's log and the bench results (a request
short of its output length stops the run), and the report it writes from a
result. The measurement itself is the script's to run, not the suite's."""

from __future__ import annotations

import copy
import json
import mmap
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # where the script finds its helpers
import _llamacpp  # noqa: E402
import _vs_llamacpp_report as report  # noqa: E402
import vs_llamacpp  # noqa: E402

FLAGS = (
    "--model",
    "--threads",
    "--concurrency",
    "--num-prompts",
    "--skip-served",
    "--skip-inprocess",
    "--out",
    "--llamacpp-dir",
)


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        vs_llamacpp.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text


def test_defaults() -> None:
    args = vs_llamacpp.parse_args([])
    assert (args.threads, args.concurrency, args.num_prompts) == (2, [1, 4, 16], 32)
    assert args.out == vs_llamacpp.DEFAULT_OUT and args.model is None
    assert not args.skip_served and not args.skip_inprocess


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--num-prompts", "-3"], "--num-prompts must be >= 1, got -3"),
        (["--concurrency", "1", "0"], "--concurrency values must be >= 1, got 0"),
        (["--skip-served", "--skip-inprocess"], "leave nothing to measure"),
        (["--model", "/no/such/model.gguf"], "--model /no/such/model.gguf: no such file"),
        (["--out", "results.txt"], "--out results.txt: must end in .json"),
        (["--threads", "two"], "invalid int value: 'two'"),
    ],
)
def test_bad_arguments_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        vs_llamacpp.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_model_that_is_not_gguf_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder_file = tmp_path / "model.safetensors"
    folder_file.write_bytes(b"")
    with pytest.raises(SystemExit):
        vs_llamacpp.parse_args(["--model", str(folder_file)])
    assert "llama.cpp reads .gguf files only" in capsys.readouterr().err


def test_llama_bench_records_become_prefill_and_decode() -> None:
    common = {"build_commit": "abc1234", "build_number": 1, "cpu_info": "Xeon", "type_k": "f16"}
    records = [
        {**common, "n_prompt": 512, "n_gen": 0, "avg_ts": 700.0, "samples_ts": [600, 900, 700]},
        {**common, "n_prompt": 0, "n_gen": 128, "avg_ts": 80.0, "samples_ts": [79, 81, 90]},
    ]
    summary = vs_llamacpp.llama_bench_summary(records)
    assert summary["prefill"]["test"] == "pp512" and summary["prefill"]["tokens_per_s"] == 700
    assert summary["decode"]["test"] == "tg128" and summary["decode"]["tokens_per_s"] == 81
    assert summary["decode"]["mean_tokens_per_s"] == 80.0
    assert summary["build"]["build_commit"] == "abc1234"


def bench_run(level: int, output_lens: list[int], failed: int = 0) -> dict:
    return {
        "max_concurrency": level,
        "output_lens": output_lens,
        "failed": failed,
        "completed": len(output_lens) - failed,
        "errors_by_kind": {"HTTP 500": failed} if failed else {},
        "output_throughput": 100.0 * level,
        "median_tpot_ms": 10.0,
        "median_ttft_ms": 50.0,
        "total_output_tokens": sum(output_lens),
        "duration": 2.0,
    }


def test_served_summary_keeps_the_figures_per_concurrency() -> None:
    summary = vs_llamacpp.served_summary("x", [bench_run(1, [128] * 4), bench_run(4, [128] * 4)])
    assert set(summary) == {"1", "4"}
    assert summary["4"]["output_throughput"] == 400.0
    assert summary["1"]["median_ttft_ms"] == 50.0 and summary["1"]["total_output_tokens"] == 512


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (bench_run(4, [128, 127, 128, 128]), "1 with other than 128 output tokens ([127])"),
        (bench_run(16, [128, 128, 0], failed=1), "concurrency 16: 1 failed requests"),
    ],
)
def test_served_summary_stops_on_a_request_short_of_its_length(run: dict, message: str) -> None:
    with pytest.raises(RuntimeError) as error:
        vs_llamacpp.served_summary("llama-server", [bench_run(1, [128] * 4), run])
    assert message in str(error.value) and "llama-server" in str(error.value)


LLAMA_LOG = """\
0.00.741.813 I load_tensors:   CPU_Mapped model buffer size =    92.10 MiB
0.00.741.900 I load_tensors:   CPU_REPACK model buffer size =    27.00 MiB
0.00.747.216 I llama_context:        CPU  output buffer size =     3.00 MiB
0.00.747.528 I llama_kv_cache:        CPU KV buffer size =   360.00 MiB
0.01.525.898 I sched_reserve:        CPU compute buffer size =    14.51 MiB
"""


def test_buffer_sizes_are_read_from_a_llama_log() -> None:
    sizes = _llamacpp.buffer_sizes(LLAMA_LOG)
    assert sizes == {
        "CPU_Mapped model": round(92.10 * 1024**2),
        "CPU_REPACK model": 27 * 1024**2,
        "CPU output": 3 * 1024**2,
        "CPU KV": 360 * 1024**2,
        "CPU compute": round(14.51 * 1024**2),
    }


def test_resident_pages_of_a_mapped_file_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    size = 64 * mmap.PAGESIZE
    path.write_bytes(bytes(range(256)) * (size // 256))
    assert _llamacpp.mapped_rss_bytes(os.getpid(), path) == 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        assert sum(mapping[i] for i in range(0, size, mmap.PAGESIZE)) == 0  # touch every page
        assert _llamacpp.mapped_rss_bytes(os.getpid(), path) == size
        assert _llamacpp.mapped_rss_bytes(os.getpid(), tmp_path / "other.gguf") == 0


def test_cpu_and_date_are_read_from_this_host() -> None:
    host = vs_llamacpp.host_info()
    assert host["cpu"] and host["date"].startswith("20") and host["cpu_count"] >= 1
    assert isinstance(host["cpu_flags"], list) and len(host["load_average_at_start"]) == 3


RESULT = {
    "benchmark": "vs_llamacpp",
    "host": {
        "date": "2025-01-01T00:00:00+00:00",
        "cpu": "Intel(R) Xeon(R) Processor",
        "cpu_flags": ["fpu", "avx2", "avx512f", "amx_int8"],
        "cpu_count": 2,
        "platform": "Linux",
        "load_average_at_start": [0.25, 0.5, 0.5],
        "load_average_at_end": [1.5, 1.0, 0.75],
    },
    "model": {"path": "/m/SmolLM2-135M-Instruct.Q4_1.gguf", "file_bytes": 100_000_000},
    "threads": 2,
    "llamacpp": {"llama_cpp_python": "0.3.36", "commit": "0c1e570"},
    "in_process": {
        "llamacpp": {
            "decode": {"test": "tg128", "tokens_per_s": 100.0},
            "prefill": {"test": "pp512", "tokens_per_s": 1000.0},
        },
        "modelbench": {
            "decode": {"tokens_per_s": 150.0},
            "prefill": {"tokens_per_s": 1500.0},
        },
    },
    "memory": {
        "modelbench": {"weights_rss_bytes": 540_000_000},
        "llamacpp": {"weights_rss_bytes": 110_000_000},
    },
    "served": {
        "modelbench": {
            "1": {"output_throughput": 60.0, "median_ttft_ms": 40.0, "median_tpot_ms": 16.0},
            "16": {"output_throughput": 300.0, "median_ttft_ms": 900.0, "median_tpot_ms": 50.0},
        },
        "llamacpp": {
            "1": {"output_throughput": 50.0, "median_ttft_ms": 50.0, "median_tpot_ms": 20.0},
            "16": {"output_throughput": 200.0, "median_ttft_ms": 600.0, "median_tpot_ms": 70.0},
        },
    },
}


def test_comparison_holds_each_ratio_against_its_target() -> None:
    comparison = report.compare(RESULT)
    assert comparison["decode"] == {"ratio": 1.5, "target": 1.3, "met": True}
    assert comparison["prefill"] == {"ratio": 1.5, "target": 2.0, "met": False}
    low, high = comparison["served"]["1"], comparison["served"]["16"]
    assert low["throughput_ratio"] == 1.2 and low["throughput_target"] == 1.0
    assert low["throughput_met"] and low["median_ttft_met"]
    assert high["throughput_ratio"] == 1.5 and high["throughput_target"] == 2.0
    assert not high["throughput_met"] and not high["median_ttft_met"]
    assert high["median_ttft_ratio"] == 1.5 and high["median_tpot_ratio"] == 50 / 70
    memory = comparison["memory"]
    assert memory["modelbench_over_file"] == 5.4 and not memory["met"]
    assert memory["llamacpp_over_file"] == 1.1


def test_the_table_has_a_row_per_figure_with_its_verdict() -> None:
    result = {**RESULT, "comparison": report.compare(RESULT)}
    lines = report.markdown_table(result).splitlines()
    rows = [line for line in lines if line.startswith("| ") and "measure" not in line]
    assert len(rows) == 2 + 3 * 2 + 1  # decode, prefill; three per level; memory
    assert all(row.count("|") == 7 for row in rows)
    decode = next(r for r in rows if r.startswith("| decode"))
    assert "150.0" in decode and "100.0" in decode and "1.50x" in decode
    assert decode.endswith("| >= 1.3x | yes |")
    prefill = next(r for r in rows if r.startswith("| prefill"))
    assert prefill.endswith("| >= 2x | no |")
    assert any(r.startswith("| served c=16: output tok/s") and r.endswith("no |") for r in rows)
    assert any(r.startswith("| served c=1: median TTFT ms") and r.endswith("yes |") for r in rows)
    memory = next(r for r in rows if r.startswith("| weights RSS"))
    assert memory.startswith("| weights RSS MB (file 100.0 MB) | 540.0 (5.40x file)")
    assert "| 110.0 (1.10x file) | 4.91x | <= 1.2x file | no |" in memory
    header = "\n".join(lines[:6])
    assert "Intel(R) Xeon(R) Processor" in header and "amx_int8" in header
    assert "fpu" not in header and "0c1e570" in header and "2025-01-01" in header
    assert "load average 0.25 / 1.50" in header


def test_skipped_parts_leave_their_rows_out() -> None:
    result = copy.deepcopy(RESULT)
    del result["served"]
    result["comparison"] = report.compare(result)
    assert set(result["comparison"]) == {"decode", "prefill", "memory"}
    table = report.markdown_table(result)
    assert "served" not in table and "| decode" in table and "| weights RSS" in table

    result = copy.deepcopy(RESULT)
    del result["in_process"], result["memory"]  # memory is measured with the in-process part
    result["comparison"] = report.compare(result)
    assert set(result["comparison"]) == {"served"}
    table = report.markdown_table(result)
    assert "| served c=16" in table and "decode" not in table and "RSS" not in table


def test_a_failed_served_part_is_a_row_of_the_table() -> None:
    result = copy.deepcopy(RESULT)
    del result["served"]["llamacpp"]  # what was measured before the failure is kept
    result["served_error"] = "llama-server at concurrency 4: 8 failed requests"
    result["comparison"] = report.compare(result)
    assert "served" not in result["comparison"]
    rows = report.markdown_table(result).splitlines()
    assert not any(row.startswith("| served c=") for row in rows)
    assert (
        "| served: failed (llama-server at concurrency 4: 8 failed requests) | | | | | no |" in rows
    )


def test_the_json_and_the_table_are_written_side_by_side(tmp_path: Path) -> None:
    result = {**RESULT, "comparison": report.compare(RESULT)}
    table = report.markdown_table(result)
    md = report.write_outputs(result, table, tmp_path / "results" / "run.json")
    assert md == tmp_path / "results" / "run.md" and md.read_text() == table
    assert json.loads((tmp_path / "results" / "run.json").read_text()) == result
