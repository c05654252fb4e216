"""Benchmark metrics, defined exactly as vLLM's serving benchmark defines
them, so that our numbers and theirs mean the same thing.

Per request (``RequestResult``), times measured by the client:
  - TTFT: from sending the request to receiving the first chunk with content;
  - ITL: every gap between consecutive content chunks (one sample per gap);
  - E2E latency: from sending the request to receiving the last chunk;
  - TPOT: (latency - TTFT) / (output tokens - 1), for requests with more than
    one output token only.

Over a run (``summarize``), from the successful requests only:
  - request, output token and total token throughput over the run's duration;
  - goodput: successful requests per second that met every SLO given
    (TTFT, TPOT, E2E latency, in ms);
  - mean, median, std and percentiles (default 50, 90, 95, 99) of TTFT, TPOT,
    ITL and E2E latency, in ms, under vLLM's keys (``mean_ttft_ms``,
    ``p99_itl_ms``, ...). An empty sample gives 0, as vLLM's does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
METRICS = ("ttft", "tpot", "itl", "e2el")
SLO_NAMES = ("ttft", "tpot", "e2el")


@dataclass
class RequestResult:
    """What one request measured. Times in seconds."""

    success: bool = False
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    generated_text: str = ""
    error: str = ""
    start_time: float = 0.0  # when it was sent, relative to the run's start

    @property
    def tpot(self) -> float | None:
        if not self.success or self.output_tokens <= 1:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def percentile_key(p: float) -> str:
    """vLLM writes p99, p99.9: the integer when it is one."""
    return str(int(p)) if float(p).is_integer() else str(p)


def parse_goodput(specs: list[str] | None) -> dict[str, float]:
    """``["ttft:200", "tpot:50"]`` -> SLOs in ms; ValueError names what is wrong."""
    slos: dict[str, float] = {}
    for spec in specs or []:
        name, _, value = spec.partition(":")
        if name not in SLO_NAMES:
            raise ValueError(
                f"goodput: {name!r} is not an SLO; use ttft, tpot or e2el, like ttft:200"
            )
        try:
            slos[name] = float(value)
        except ValueError as exc:
            raise ValueError(
                f"goodput: {spec!r} needs a number of milliseconds, like {name}:200"
            ) from exc
        if not slos[name] > 0:
            raise ValueError(f"goodput: {spec!r} must be > 0 ms")
    return slos


def stats(values_s: list[float], name: str, percentiles: tuple[float, ...]) -> dict[str, float]:
    """mean, median, std and percentiles of a sample, converted to ms."""
    ms = np.asarray(values_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        ms = np.zeros(1)
    out = {
        f"mean_{name}_ms": float(np.mean(ms)),
        f"median_{name}_ms": float(np.median(ms)),
        f"std_{name}_ms": float(np.std(ms)),
    }
    for p in percentiles:
        out[f"p{percentile_key(p)}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def summarize(
    results: list[RequestResult],
    duration_s: float,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
    goodput_slos: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The run's metrics under vLLM's keys, plus the per-request arrays."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    ok = [r for r in results if r.success]
    ttfts = [r.ttft for r in ok]
    tpots = [t for r in ok if (t := r.tpot) is not None]
    itls = [gap for r in ok for gap in r.itl]
    e2els = [r.latency for r in ok]
    total_input = sum(r.prompt_len for r in ok)
    total_output = sum(r.output_tokens for r in ok)

    good = 0
    if goodput_slos:
        for r in ok:
            measured = {"ttft": r.ttft, "tpot": r.tpot or 0.0, "e2el": r.latency}
            if all(measured[name] * 1000.0 <= limit for name, limit in goodput_slos.items()):
                good += 1

    out: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(ok) / duration_s,
        "request_goodput": good / duration_s if goodput_slos else None,
        "output_throughput": total_output / duration_s,
        "total_token_throughput": (total_input + total_output) / duration_s,
    }
    for name, sample in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        out.update(stats(sample, name, percentiles))
    out.update(
        {
            "input_lens": [r.prompt_len for r in results],
            "output_lens": [r.output_tokens if r.success else 0 for r in results],
            "ttfts": [r.ttft if r.success else None for r in results],
            "itls": [r.itl if r.success else [] for r in results],
            "e2els": [r.latency if r.success else None for r in results],
            "start_times": [r.start_time for r in results],
            "generated_texts": [r.generated_text for r in results],
            "errors": [r.error for r in results],
        }
    )
    return out
