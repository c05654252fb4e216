"""Runs saved to the store and reported: the table, the figures, the HTML;
an all-failed run; unknown ids; and `modelbench bench` end to end on a tiny
model through the CLI (result file, --save, --sweep)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelbench.bench.metrics import RequestResult, summarize
from modelbench.bench.report import format_table, pareto_front, report, table
from modelbench.bench.store import list_runs, load_runs, save_run

from ..tiny_models import build_tiny_model


def fake_result(name: str, concurrency: int, ttft: float, fail: bool = False) -> dict:
    results = [RequestResult(success=not fail, prompt_len=10, output_tokens=5, ttft=ttft * (1 + i / 10),
                             itl=[0.01] * 4, latency=ttft + 0.05, error="HTTP 500" if fail else "")
               for i in range(10)]
    out = summarize(results, 2.0)
    out["config"] = {"backend": "openai", "model": "m", "name": name, "max_concurrency": concurrency,
                     "request_rate": "inf", "percentiles": [50, 90, 95, 99]}
    out["environment"] = {"torch": "x"}
    return out


def test_save_load_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ids = [save_run(fake_result("sweep", c, 0.1 * c), url) for c in (1, 4)]
    ids.append(save_run(fake_result("broken", 2, 0.1, fail=True), url))
    runs = load_runs(ids, url)
    assert [r["id"] for r in runs] == ids and len(runs[0]["requests"]) == 10
    assert runs[0]["requests"][0]["ttft_ms"] == pytest.approx(100.0)
    assert runs[2]["summary"]["completed"] == 0
    assert {r["id"] for r in list_runs(url)} == set(ids)

    path = report(ids, tmp_path / "out", url)
    for name in ("latency_cdf", "throughput", "percentiles", "pareto"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 5000
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 4 and ids[0] in page
    rows = {row[0]: row[1:] for row in table(runs)}
    assert rows["completed"] == ["10", "10", "0"] and rows["failed"] == ["0", "0", "10"]
    assert rows["output throughput (tok/s)"][0] == "25.00"  # 50 tokens over 2 s
    assert "p99 TTFT (ms)" in format_table(table(runs))
    with pytest.raises(ValueError, match="run_nope"):
        load_runs([ids[0], "run_nope"], url)


def test_pareto_front() -> None:
    points = [(100.0, 10.0), (200.0, 30.0), (150.0, 5.0), (300.0, 25.0), (400.0, 40.0)]
    assert pareto_front(points) == [(100.0, 10.0), (200.0, 30.0), (400.0, 40.0)]


def test_bench_cli_end_to_end(tmp_path: Path) -> None:
    model = build_tiny_model("llama_gqa", tmp_path / "llama")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result_file = tmp_path / "sweep.json"
    out = subprocess.run(
        [sys.executable, "-m", "modelbench", "bench", "--backend", "engine", "--model", str(model),
         "--num-prompts", "6", "--random-input-len", "24", "--random-output-len", "8",
         "--sweep", "max-concurrency=1,3", "--goodput", "ttft:10000", "--save", "--database-url", url,
         "--result-file", str(result_file), "--name", "tiny", "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Serving Benchmark Result") == 2
    runs = json.loads(result_file.read_text())
    assert [r["max_concurrency"] for r in runs] == [1, 3]
    for run in runs:
        assert run["completed"] == 6 and run["total_output_tokens"] == 48
        assert run["request_goodput"] == pytest.approx(run["request_throughput"])
        assert run["environment"]["torch"] and run["run_id"].startswith("run_")
    listed = subprocess.run([sys.executable, "-m", "modelbench", "report", "--list", "--database-url", url],
                            capture_output=True, text=True, timeout=120)
    assert all(r["run_id"] in listed.stdout for r in runs)
    bad = subprocess.run([sys.executable, "-m", "modelbench", "bench", "--backend", "openai",
                          "--num-prompts", "1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "need --model" in bad.stderr
