"""benchmarks/soak.py, bounded: under a minute of its mixed load on a tiny
random-weight Llama served by a real `modelbench serve` subprocess, judged
by the script's own criteria (a shorter warm-up than the ten-minute run's);
and the judge itself, on runs made up to break each criterion, so that a
leak cannot pass for a flat line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .tiny_models import build_tiny_model

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
_spec = importlib.util.spec_from_file_location("_soak_judge", BENCHMARKS / "_soak_judge.py")
assert _spec is not None and _spec.loader is not None
soak_judge = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # for @dataclass
_spec.loader.exec_module(soak_judge)
FD_NOISE, Ledger, Sent = soak_judge.FD_NOISE, soak_judge.Ledger, soak_judge.Sent
judge, least_squares_slope = soak_judge.judge, soak_judge.least_squares_slope

MIX = {"chat", "chat_stream", "completion", "completion_stream", "cancelled", "bad"}
# A server under a minute old still grows under any load, in steps of a few
# hundred KB (native memory: its allocator and caches filling; Python's own
# objects stay flat): 1.5 to 3.5 MB/min measured at 0.4 to 6 requests/s with
# chat alone, batches alone, and the mix. The bounded run allows 8 MB/min,
# which a leak of some 20 KB per request still breaks; the ten-minute run
# holds 1 MB/min after two minutes of warm-up (docs/reliability.md).
YOUNG_RSS_SLOPE_MB_PER_MIN = 8.0


def test_a_bounded_soak_on_a_tiny_model_passes_every_criterion(tmp_path: Path) -> None:
    model = build_tiny_model("llama_gqa", tmp_path / "llama")
    out, png = tmp_path / "soak.json", tmp_path / "soak.png"
    command = [sys.executable, str(BENCHMARKS / "soak.py"), "--model", str(model)]
    command += ["--max-model-len", "256", "--kv-cache-memory", str(32 * 1024 * 1024)]
    command += ["--duration-s", "50", "--warmup-s", "20", "--sample-every-s", "2"]
    command += ["--concurrency", "2", "--think-s", "0.2", "--batch-every-s", "8"]
    command += ["--max-rss-slope-mb-per-min", str(YOUNG_RSS_SLOPE_MB_PER_MIN)]
    command += ["--out", str(out), "--plot", str(png)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.is_file(), run.stderr[-4000:]
    result = json.loads(out.read_text())
    figures = {k: result[k] for k in ("rss_mb", "kv_usage", "fds", "tasks", "records", "requests")}
    figures |= {"unexpected": result["unexpected_requests"][:5]}
    figures |= {"server_log": result.get("server_log_tail"), "stderr": run.stderr[-2000:]}
    assert result["verdicts"] == dict.fromkeys(result["criteria"], True), figures
    assert result["passed"] and run.returncode == 0
    assert result["server_exit_code"] == 0  # SIGTERM drained it

    requests = result["requests"]
    assert set(requests["by_kind"]) == MIX
    for kind, counts in requests["by_kind"].items():
        assert counts["sent"] >= 5 and counts["as_expected"] == counts["sent"], kind
    assert requests["batches"] >= 3 and requests["jobs"] == 4 * requests["batches"]

    records = result["records"]
    assert records["records"] == records["expected"] == requests["total"] + requests["jobs"]
    assert records["cancelled_aborted"] > 0  # disconnects mid-stream were aborted, not run out

    steady = [s for s in result["samples"] if s["phase"] == "steady"]
    assert len(steady) >= 10 and result["rss_mb"]["samples_in_fit"] == len(steady)
    assert all(s["tasks"] is not None and s["kv_usage"] is not None for s in steady)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the judge, on made-up runs ---------------------------------------------


def made_up_run(rss_mb_per_min: float = 0.0, fds_added: int = 0, kv_left: float = 0.0) -> dict:
    """A 5-minute steady phase sampled every 5 s, RSS on a line, noise-free."""
    samples = []
    for i in range(61):
        t = 60.0 + 5 * i
        rss = 500 + rss_mb_per_min * (t - 60) / 60 + (0.3 if i % 2 else -0.3)
        samples.append(
            {"t_s": t, "phase": "steady", "rss_mb": rss, "kv_usage": 0.1, "fds": 30}
            | {"tasks": 8.0, "threads": 20}
        )
    idle = {"rss_mb": 500.0, "kv_usage": 0.0, "fds": 25, "tasks": 5.0, "threads": 20}
    idle |= {"records_dropped": 0.0}
    end = idle | {"kv_usage": kv_left, "fds": 25 + fds_added}
    return {
        "samples": samples,
        "steady_s": [60.0, 360.0],
        "load_s": 360.0,
        "idle": {"start": idle, "end": end},
        "records": {"recorded_once": True},
    }


def answered_ledger() -> Any:  # a _soak_judge.Ledger
    ledger = Ledger()
    ledger.sent.append(Sent("chat", "soak-chat-0", 200, "succeeded", 200, "req_0", ok=True))
    return ledger


def test_the_judge_passes_a_flat_run_and_fails_each_kind_of_leak() -> None:
    assert judge(made_up_run(), answered_ledger(), 1.0)["passed"]
    slow_leak = judge(made_up_run(rss_mb_per_min=1.5), answered_ledger(), 1.0)
    assert slow_leak["verdicts"]["rss_flat"] is False
    assert slow_leak["rss_mb"]["slope_mb_per_min"] == pytest.approx(1.5, abs=0.05)
    held = judge(made_up_run(kv_left=1 / 4096), answered_ledger(), 1.0)["verdicts"]
    assert held["kv_blocks_no_growth"] is False  # one block left held is a leak
    fds = judge(made_up_run(fds_added=FD_NOISE + 1), answered_ledger(), 1.0)["verdicts"]
    assert fds["fds_no_growth"] is False
    assert judge(made_up_run(fds_added=FD_NOISE), answered_ledger(), 1.0)["verdicts"][
        "fds_no_growth"
    ]


def test_the_judge_fails_a_run_with_an_unexpected_answer_or_a_lost_record() -> None:
    ledger = answered_ledger()
    ledger.sent.append(Sent("chat", "soak-chat-1", 200, "succeeded", 500, None, ok=False))
    assert judge(made_up_run(), ledger, 1.0)["verdicts"]["requests_as_expected"] is False
    lost = made_up_run()
    lost["records"] = {"recorded_once": False}
    assert judge(lost, answered_ledger(), 1.0)["verdicts"]["recorded_once"] is False
    dropped = made_up_run()
    dropped["idle"]["end"]["records_dropped"] = 1.0
    assert judge(dropped, answered_ledger(), 1.0)["verdicts"]["recorded_once"] is False


def test_least_squares_slope_is_the_fitted_line() -> None:
    assert least_squares_slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert least_squares_slope([0, 1], [0, 1]) is None  # too few points to judge
