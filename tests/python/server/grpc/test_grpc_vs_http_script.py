"""benchmarks/grpc_vs_http.py end to end, bounded: a tiny random-weight
Llama and the digit classifier in one served process, a few calls each way
at two concurrencies; every run is in the JSON with its figures, and the
comparison has a row per call and concurrency. Times are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ...tiny_models import build_tiny_model

BENCHMARKS = Path(__file__).resolve().parents[4] / "benchmarks"


def test_grpc_vs_http_measures_both_ways(tmp_path: Path) -> None:
    model = build_tiny_model("llama_gqa", tmp_path / "llama")
    out = tmp_path / "grpc_vs_http.json"
    subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "grpc_vs_http.py"),
            "--model",
            str(model),
            "--requests",
            "6",
            "--warmup",
            "1",
            "--rounds",
            "2",
            "--concurrency",
            "1",
            "3",
            "--digits-epochs",
            "1",
            "--out",
            str(out),
        ],
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"},
        cwd=BENCHMARKS.parent,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.read_text())
    assert result["host"] and result["cpus"] >= 1 and result["grpcio"]
    runs = {(r["call"], r["protocol"], r["concurrency"]): r for r in result["runs"]}
    assert set(runs) == {
        (call, protocol, c)
        for call in ("predict", "generate")
        for protocol in ("grpc", "http")
        for c in (1, 3)
    }
    for run in runs.values():
        assert run["num_requests"] == 6
        assert 0 < run["p50_ms"] <= run["p99_ms"] and run["requests_per_s"] > 0
        assert run["server_cpu_ms_per_request"] >= 0
    assert len(result["grpc_over_http"]) == 4
