"""The runner: sends a workload to a target on schedule and gathers what each
request measured.

Each request waits for its arrival time, then for a free slot under
``max_concurrency`` (none: unbounded), then is sent. The client's own
overhead is measured too: how late each request left against its schedule
(``send_lag``), reported with the run, so a client that cannot keep up shows
in the numbers instead of hiding in them.

A target with ``run_all`` (transformers) is handed the whole schedule instead
and keeps it itself, timed the same way (see ``hf_target.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from tqdm import tqdm

from modelbench.bench.metrics import RequestResult
from modelbench.bench.workload import BenchRequest


@dataclass
class RunOutcome:
    results: list[RequestResult]
    duration_s: float
    send_lags_s: list[float]  # per request: sent minus scheduled (0 when a slot was the wait)


async def run_workload(
    target: object,
    requests: list[BenchRequest],
    arrivals: list[float],
    max_concurrency: int | None = None,
    progress: bool = True,
) -> RunOutcome:
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    bar = tqdm(total=len(requests), disable=not progress, unit="req", dynamic_ncols=True)
    if hasattr(target, "run_all"):  # a target that schedules itself (transformers)
        try:
            results, duration, lags = await target.run_all(
                requests, arrivals, max_concurrency, bar.update
            )
        finally:
            bar.close()
        return RunOutcome(results, duration, lags)
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    lags = [0.0] * len(requests)

    async def one(request: BenchRequest, sent_at: float) -> RequestResult:
        async with slots if slots is not None else contextlib.nullcontext():
            sent = time.perf_counter() - started if slots is not None else sent_at
            result = await target.send(request)  # type: ignore[attr-defined]
        result.start_time = sent
        bar.update(1)
        return result

    # One dispatcher sends each request at its time: thousands of sleeping
    # tasks created up front would make the first ones leave late.
    tasks = []
    started = time.perf_counter()
    try:
        for i, (request, at) in enumerate(zip(requests, arrivals)):
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter() - started
            lags[i] = max(0.0, now - at)
            tasks.append(asyncio.create_task(one(request, now)))
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        bar.close()
    return RunOutcome(list(results), time.perf_counter() - started, lags)
