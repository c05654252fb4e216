"""TransformersTarget: the usual baseline, Hugging Face ``generate`` on the
same weights and dtype, one request at a time (``batch_size=1``) or in padded
static batches (left padding; a batch runs until its longest request is done,
which is what static batching costs).

It serves the workload as a static-batching server would, and is timed as
the runner times the other targets, so the numbers compare:

- a request is sent at its arrival time (the run's start at rate inf), or,
  under ``max_concurrency``, when a request in flight has finished and freed
  a slot; TTFT, ITL and E2E latency are measured from that send time, so the
  time a request waits for the batches before its own is in its TTFT;
- whenever ``generate`` is idle, the next batch takes up to ``batch_size`` of
  the requests sent by then, in order (waiting for the next arrival when none
  is); a batch's membership is fixed until it ends;
- each step's time is taken by a streamer that ``generate`` calls once per
  step: a request's first token arrives with its batch's first step, and its
  last with the step that produced its ``output_len``-th token (EOS is
  ignored), so it generates exactly its output length, like the other targets.

``max_concurrency`` below ``batch_size`` is refused: a batch could never fill.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable

import torch

from modelbench.bench.metrics import RequestResult
from modelbench.bench.workload import BenchRequest
from modelbench.models.tokenizer import Tokenizer


class StepTimes:
    """A ``generate`` streamer that only notes when each step's tokens arrive."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # the first call hands over the prompt
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def check_concurrency(max_concurrency: int | None, batch_size: int) -> None:
    """ValueError unless a batch of ``batch_size`` can be in flight at once."""
    if max_concurrency is not None and max_concurrency < batch_size:
        raise ValueError(
            f"max_concurrency must be >= batch_size ({batch_size}) for the transformers "
            f"backend, got {max_concurrency}: a static batch needs its requests in flight "
            "at once"
        )


class TransformersTarget:
    def __init__(
        self,
        model_path: str | None,
        tokenizer: Tokenizer,
        batch_size: int = 1,
        dtype: str = "float32",
    ) -> None:
        from modelbench.models import load_checkpoint
        from modelbench.models.hf_reference import transformers_model

        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise ValueError(
                f"dtype must be float32 or bfloat16 for the transformers backend, got {dtype!r}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = transformers_model(load_checkpoint(model_path, dtype=dtypes[dtype]))
        self.model.generation_config.eos_token_id = None  # run to the requested length
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    async def run_all(
        self,
        requests: list[BenchRequest],
        arrivals: list[float],
        max_concurrency: int | None = None,
        on_done: Callable[[int], object] | None = None,
    ) -> tuple[list[RequestResult], float, list[float]]:
        """Every request, at its arrival time: (results in request order,
        the run's duration, each request's send lag). ``on_done(n)`` is
        called as each batch ends (a progress bar's ``update``)."""
        check_concurrency(max_concurrency, self.batch_size)
        if len(arrivals) != len(requests):
            raise ValueError(f"{len(requests)} requests but {len(arrivals)} arrival times")
        return await asyncio.to_thread(self._run_all, requests, arrivals, max_concurrency, on_done)

    @torch.inference_mode()
    def _run_all(
        self,
        requests: list[BenchRequest],
        arrivals: list[float],
        max_concurrency: int | None,
        on_done: Callable[[int], object] | None,
    ) -> tuple[list[RequestResult], float, list[float]]:
        results: list[RequestResult | None] = [None] * len(requests)
        lags = [0.0] * len(requests)
        sent_at: list[float] = []  # per request sent so far, relative to the run's start
        finished: list[float] = []  # when each finished request got its last token, sorted
        queued: list[int] = []  # sent, not yet in a batch
        started = time.perf_counter()

        def send_due(now: float) -> None:
            """Send, in order, every request due by ``now``: arrived, with a free slot."""
            while len(sent_at) < len(requests):
                i = len(sent_at)
                slot_free_at = 0.0
                if max_concurrency is not None and i >= max_concurrency:
                    if len(finished) <= i - max_concurrency:
                        return  # every slot is held
                    slot_free_at = finished[i - max_concurrency]
                send = max(arrivals[i], slot_free_at)
                if send > now:
                    return
                sent_at.append(send)
                queued.append(i)

        while len(finished) < len(requests):
            send_due(time.perf_counter() - started)
            if not queued:  # idle: wait for the next arrival (a slot is free, nothing runs)
                i = len(sent_at)
                delay = started + arrivals[i] - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                lags[i] = max(0.0, time.perf_counter() - started - arrivals[i])
                continue
            batch, queued[:] = queued[: self.batch_size], queued[self.batch_size :]
            outs = self._run_batch(
                [requests[i] for i in batch], [started + sent_at[i] for i in batch]
            )
            for i, result in zip(batch, outs):
                result.start_time = sent_at[i]
                results[i] = result
                bisect.insort(finished, sent_at[i] + result.latency)
            if on_done is not None:
                on_done(len(batch))
        return [r for r in results if r is not None], time.perf_counter() - started, lags

    def _run_batch(self, batch: list[BenchRequest], sent: list[float]) -> list[RequestResult]:
        """One padded static batch; ``sent`` are the requests' send times (perf_counter)."""
        ids = [self.tokenizer.encode(r.prompt) for r in batch]
        width = max(len(x) for x in ids)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)  # [batch, width], left-padded
        mask = torch.zeros_like(input_ids)
        for row, x in enumerate(ids):
            input_ids[row, width - len(x) :] = torch.tensor(x)
            mask[row, width - len(x) :] = 1
        n = max(r.output_len for r in batch)
        steps = StepTimes()
        out = self.model.generate(
            input_ids,
            attention_mask=mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            streamer=steps,
        )
        results = []
        for row, request in enumerate(batch):
            times = steps.times[: request.output_len]
            tokens = out[row, width : width + request.output_len].tolist()
            results.append(
                RequestResult(
                    success=bool(times),
                    prompt_len=len(ids[row]),
                    output_tokens=len(times),
                    ttft=times[0] - sent[row] if times else 0.0,
                    itl=[b - a for a, b in zip(times, times[1:])],
                    latency=(times[-1] if times else time.perf_counter()) - sent[row],
                    generated_text=self.tokenizer.decode(tokens),
                    error="" if times else "generate produced no token",
                )
            )
        return results

    async def close(self) -> None:
        pass
