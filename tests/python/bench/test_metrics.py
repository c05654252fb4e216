"""vLLM's metric definitions on hand-computed cases."""

from __future__ import annotations

import pytest

from modelbench.bench.metrics import RequestResult, parse_goodput, percentile_key, summarize


def ok(
    prompt_len: int, output_tokens: int, ttft: float, itl: list[float], latency: float
) -> RequestResult:
    return RequestResult(
        success=True,
        prompt_len=prompt_len,
        output_tokens=output_tokens,
        ttft=ttft,
        itl=itl,
        latency=latency,
    )


def test_hand_computed_run() -> None:
    results = [
        ok(10, 3, 0.100, [0.050, 0.050], 0.200),  # tpot (0.2 - 0.1) / 2 = 50 ms
        ok(20, 1, 0.300, [], 0.300),  # one token: no tpot, no itl
        ok(30, 5, 0.200, [0.010, 0.020, 0.030, 0.040], 0.300),  # tpot 25 ms
        RequestResult(success=False, prompt_len=40, error="HTTP 500"),
    ]
    m = summarize(results, duration_s=2.0, percentiles=(50, 99, 99.9))
    assert (m["completed"], m["failed"]) == (3, 1)
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (
        60,
        9,
    )  # the failed one is not counted
    assert m["request_throughput"] == pytest.approx(1.5)
    assert m["output_throughput"] == pytest.approx(4.5)
    assert m["total_token_throughput"] == pytest.approx(34.5)
    assert m["mean_ttft_ms"] == pytest.approx(200.0) and m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["std_ttft_ms"] == pytest.approx((20000 / 3) ** 0.5)
    assert m["mean_tpot_ms"] == pytest.approx(37.5) and m["median_tpot_ms"] == pytest.approx(37.5)
    assert m["mean_itl_ms"] == pytest.approx(200 / 6)  # six gaps in all
    assert m["median_itl_ms"] == pytest.approx(35.0)
    assert m["mean_e2el_ms"] == pytest.approx(800 / 3)
    assert m["p50_e2el_ms"] == pytest.approx(300.0)
    assert m["p99_ttft_ms"] == pytest.approx(298.0)  # linear interpolation between 200 and 300
    assert "p99.9_ttft_ms" in m and m["request_goodput"] is None
    assert m["output_lens"] == [3, 1, 5, 0] and m["errors"][3] == "HTTP 500"
    assert m["ttfts"][3] is None and m["itls"][1] == []


def test_goodput_counts_requests_meeting_every_slo() -> None:
    results = [
        ok(1, 3, 0.1, [0.05, 0.05], 0.2),
        ok(1, 3, 0.5, [0.05, 0.05], 0.6),
        ok(1, 3, 0.1, [0.2, 0.2], 0.5),
    ]
    m = summarize(results, 1.0, goodput_slos=parse_goodput(["ttft:200", "tpot:100"]))
    assert m["request_goodput"] == pytest.approx(1.0)  # the 2nd misses TTFT, the 3rd TPOT
    m = summarize(results, 2.0, goodput_slos={"e2el": 550.0})
    assert m["request_goodput"] == pytest.approx(1.0)


def test_no_successful_request_gives_zeros() -> None:
    m = summarize([RequestResult(success=False, error="refused")], 1.0)
    assert m["completed"] == 0 and m["mean_ttft_ms"] == 0.0 and m["p99_itl_ms"] == 0.0


@pytest.mark.parametrize(
    "spec, message",
    [
        (["latency:5"], "not an SLO"),
        (["ttft:fast"], "number of milliseconds"),
        (["tpot:0"], "> 0"),
    ],
)
def test_bad_goodput(spec: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_goodput(spec)


def test_percentile_keys_and_duration() -> None:
    assert [percentile_key(p) for p in (50, 99.0, 99.9)] == ["50", "99", "99.9"]
    with pytest.raises(ValueError, match="duration_s"):
        summarize([], 0.0)
