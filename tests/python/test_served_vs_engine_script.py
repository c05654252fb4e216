"""benchmarks/served_vs_engine.py --max-concurrency on a tiny model: one short
round through every target (LLM and AsyncEngine in their workers, this tree
served, and a baseline tree served), and the JSON it writes. The times
themselves are the script's to report, not the suite's to judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .tiny_models import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "served_vs_engine.py"


def run(*flags: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MODELBENCH_LOG_LEVEL": "WARNING"},
    )


@pytest.mark.slow
def test_one_round_through_every_target(tmp_path: Path) -> None:
    model = build_tiny_model("llama_gqa", tmp_path / "llama")
    out = tmp_path / "latency.json"
    flags = ["--model", str(model), "--max-concurrency", "2", "--rounds", "2"]
    flags += ["--input-len", "16", "--output-len", "6", "--store-dir", str(tmp_path / "store")]
    flags += ["--baseline-python", str(ROOT / "python"), "--out", str(out)]
    done = run(*flags)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["workload"] == {
        "max_concurrency": 2,
        "input_len": 16,
        "output_len": 6,
        "rounds": 2,
    }
    targets = result["targets"]
    assert set(targets) == {"llm", "async_engine", "served", "served_baseline"}
    for name, target in targets.items():
        rounds = result["rounds"][name]
        assert len(rounds) == 2
        assert all(len(r["tpot_ms"]) == 2 and min(r["tpot_ms"]) > 0 for r in rounds), name
        assert target["min_tpot_ms"] <= target["median_tpot_ms"]
    assert targets["llm"]["over_llm"] == 1.0
    assert "sleeps_per_token" in targets["served"] and "sleeps_per_token" not in targets["llm"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-concurrency", "0"],
        ["--max-concurrency", "1", "--rounds", "0"],
        ["--max-concurrency", "1", "--output-len", "1"],
    ],
)
def test_bad_latency_flags_are_refused(flags: list[str]) -> None:
    done = run(*flags, timeout=120)
    assert done.returncode == 2
    assert "--max-concurrency and --rounds must be >= 1, --output-len >= 2" in done.stderr
