"""The scripts in benchmarks/ run end to end on a tiny random-weight Llama
(small contexts and batches, so that this is a smoke test, not a
measurement) and write the JSON the docs quote: the bound's parts add up,
the profile's parts fit in the forward, and the bf16 variants count bf16
bytes. Times are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..tiny_models import build_tiny_model

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama_gqa", tmp_path_factory.mktemp("bench-scripts") / "llama")


def run_script(name: str, *args: str, out: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args, "--out", str(out)],
        check=True,
        env=env,
        cwd=BENCHMARKS.parent,
        capture_output=True,
        timeout=600,
    )
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "extra, kv_bytes",
    [
        ((), 4),
        (("--kv-cache-dtype", "bfloat16"), 2),
        (("--dtype", "bfloat16"), 2),
        (("--kv-cache-dtype", "int8"), 1),
    ],
)
def test_decode_bound_writes_each_step_against_its_bound(
    tiny_llama: Path, tmp_path: Path, extra: tuple, kv_bytes: int
) -> None:
    result = run_script(
        "decode_bound.py",
        "--model",
        str(tiny_llama),
        "--context",
        "40",
        "--batch",
        "4",
        "--steps",
        "3",
        *extra,
        out=tmp_path / "bound.json",
    )
    assert result["kv_cache_dtype"] == {4: "float32", 2: "bfloat16", 1: "int8"}[kv_bytes]
    assert result["stream_copy_gb_s"] > 0 and result["matmul_gflop_s"] > 0
    one, four = result["steps"]["batch_1"], result["steps"]["batch_4"]
    for step in (one, four):
        assert step["num_steps_timed"] >= 1 and step["median_step_ms"] > 0
        assert step["bound_ms"] == pytest.approx(
            max(step["memory_bound_ms"], step["compute_bound_ms"])
        )
        assert step["fraction_of_bound"] == pytest.approx(step["bound_ms"] / step["median_step_ms"])
    # Three more sequences add their K and V: 40 positions x layers x 2 x kv_dim x bytes each.
    spec_kv_mb = (four["bytes_read_mb"] - one["bytes_read_mb"]) / 3
    assert spec_kv_mb > 0
    assert set(result["targets"]) == {"batch_1_step_over_memory_bound", "batch_4_fraction_of_bound"}
    assert len(result["rounds"]) == 1
    assert result["rounds"][0]["batch_4_fraction_of_bound"] == four["fraction_of_bound"]
    if extra:  # the same tiny model, KV in 2 bytes (int8: 1 and a 4-byte scale a row)
        base = run_script(
            "decode_bound.py",
            "--model",
            str(tiny_llama),
            "--context",
            "40",
            "--batch",
            "4",
            "--steps",
            "3",
            "--rounds",
            "2",
            out=tmp_path / "base.json",
        )
        # Two rounds, each its own bound; the top is the lower (median) one.
        assert len(base["rounds"]) == 2
        fractions = [r["batch_4_fraction_of_bound"] for r in base["rounds"]]
        assert base["steps"]["batch_4"]["fraction_of_bound"] == min(fractions)
        base_kv_mb = (
            base["steps"]["batch_4"]["bytes_read_mb"] - base["steps"]["batch_1"]["bytes_read_mb"]
        ) / 3
        head_dim = json.loads((tiny_llama / "config.json").read_text())
        head_dim = head_dim["hidden_size"] // head_dim["num_attention_heads"]
        row_bytes = kv_bytes * head_dim + (4 if kv_bytes == 1 else 0)
        assert spec_kv_mb == pytest.approx(base_kv_mb * row_bytes / (4 * head_dim))


def test_quant_kernels_compares_every_set_the_cpu_runs(tmp_path: Path) -> None:
    from modelbench import _core

    result = run_script(
        "quant_kernels.py",
        *("--rows", "1", "9", "--matrices", "2", "--rounds", "1", "--with-generic"),
        out=tmp_path / "quant.json",
    )
    sets = [
        isa
        for isa in ("generic", "avx2", "avx512", "amx")
        if _core.testing.quant_isa_supported(isa)
    ]
    assert result["kernel_sets"] == sets
    assert [row["rows"] for row in result["results"]] == [1, 9]
    for row in result["results"]:
        assert all(row[f"{isa}_gflop_s"] > 0 for isa in sets)
        if "avx512" in sets:
            assert row["avx512_over_avx512"] == 1.0


def test_profile_step_splits_the_forward(tiny_llama: Path, tmp_path: Path) -> None:
    result = run_script(
        "profile_step.py",
        "--model",
        str(tiny_llama),
        "--context",
        "40",
        "--batch",
        "4",
        "--steps",
        "4",
        out=tmp_path / "profile.json",
    )
    for step in result["decode"]:
        assert step["batch"] in (1, 4) and step["median_step_ms"] > 0
        parts = step["forward_parts"]
        assert {
            "linear_ms",
            "paged_attention_ms",
            "rms_norm_ms",
            "rotary_ms",
            "silu_mul_ms",
            "other_ms",
        } <= set(parts)
        assert parts["paged_attention_ms"] > 0 and parts["linear_ms"] > 0
        assert (
            sum(v for k, v in parts.items() if k != "other_ms")
            <= step["runner"]["forward_ms"] * 1.05
        )
    assert 0 <= result["python"]["python_fraction"] < 1


def test_gateway_overhead_measures_both_targets_and_the_gateway_cpu(tmp_path: Path) -> None:
    result = run_script(
        "gateway_overhead.py",
        "--requests",
        "20",
        "--block",
        "5",
        "--warmup",
        "2",
        "--concurrency",
        "4",
        "--seconds",
        "1",
        out=tmp_path / "gateway.json",
    )
    assert result["cpus"] >= 1 and result["host"] and result["python"]
    latency = result["latency"]
    for target in ("direct", "gateway"):
        stats = latency[target]
        assert stats["num_requests"] == 20
        assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] and stats["mean_ms"] > 0
    added = latency["gateway"]["p50_ms"] - latency["direct"]["p50_ms"]
    assert latency["added_p50_ms"] == pytest.approx(added)
    throughput = result["throughput"]
    assert throughput["clients"][0] == "httpx"
    for run in (throughput[client] for client in throughput["clients"]):
        for target in ("gateway", "direct"):
            one = run[target]
            assert one["num_ok"] > 0 and one["num_errors"] == 0 and one["seconds"] > 0
            assert one["requests_per_s"] == pytest.approx(one["num_ok"] / one["seconds"])
            assert 0 < one["p50_ms"] <= one["p99_ms"]
            assert one["upstream_cpu_ms_per_request"] >= 0
        assert run["gateway"]["gateway_cpu_ms_per_request"] > 0
        assert "gateway_cpu_ms_per_request" not in run["direct"]
    targets = result["targets"]
    assert targets["p50_added_met"] == (targets["p50_added_ms"] <= targets["p50_added_ms_max"])
    assert targets["p99_added_met"] == (targets["p99_added_ms"] <= targets["p99_added_ms_max"])
    assert targets["rps_met"] == (targets["rps"] >= targets["rps_min"])
    assert result["notes"]


def test_predict_measures_batching_on_and_off_over_http_and_in_process(tmp_path: Path) -> None:
    result = run_script(
        "predict.py",
        *("--hidden", "64", "--seconds", "0.3", "--concurrency", "1", "4"),
        out=tmp_path / "predict.json",
    )
    assert result["gomp_spincount"] is not None  # re-executed with the spin bounded
    for via in ("http", "engine"):
        runs = result[via]["results"]
        for mode in ("on", "off"):
            for level in ("1", "4"):
                run = runs[mode][level]
                assert run["requests"] > 0 and run["p50_ms"] <= run["p99_ms"]
        assert result[via]["throughput_on_over_off_at_4"] > 0
        assert result[via]["p99_on_at_1_over_p50_off_at_1"] > 0
    # In process, batching on runs several requests per batch at 4 callers; off, one.
    engine = result["engine"]["results"]
    assert engine["on"]["4"]["rows_per_batch"] > 1.5
    assert engine["off"]["4"]["rows_per_batch"] == 1
