"""TransformersTarget: the usual baseline, Hugging Face ``generate`` on the
same weights and dtype, one request at a time (``batch_size=1``) or in padded
static batches (left padding; a batch runs until its longest request is done,
which is what static batching costs).

Each step's time is taken by a streamer that ``generate`` calls once per
step, so TTFT and ITL are measured as for a server: a request's first token
arrives with the batch's first step, and its last with the step that
produced its ``output_len``-th token. Every request generates exactly its
output length (EOS is ignored), like the other targets.
"""

from __future__ import annotations

import asyncio
import time

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


class TransformersTarget:
    def __init__(self, model_path: str | None, tokenizer: Tokenizer, batch_size: int = 1,
                 dtype: str = "float32") -> None:
        from modelbench.models import load_checkpoint
        from modelbench.models.hf_reference import transformers_model

        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise ValueError(f"dtype must be float32 or bfloat16 for the transformers backend, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = transformers_model(load_checkpoint(model_path, dtype=dtypes[dtype]))
        self.model.generation_config.eos_token_id = None  # run to the requested length
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    async def run_all(self, requests: list[BenchRequest]) -> tuple[list[RequestResult], float]:
        return await asyncio.to_thread(self._run_all, requests)

    @torch.inference_mode()
    def _run_all(self, requests: list[BenchRequest]) -> tuple[list[RequestResult], float]:
        results: list[RequestResult] = []
        started = time.perf_counter()
        for i in range(0, len(requests), self.batch_size):
            results += self._run_batch(requests[i:i + self.batch_size], started)
        return results, time.perf_counter() - started

    def _run_batch(self, batch: list[BenchRequest], run_started: float) -> list[RequestResult]:
        ids = [self.tokenizer.encode(r.prompt) for r in batch]
        width = max(len(x) for x in ids)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, x in enumerate(ids):
            input_ids[row, width - len(x):] = torch.tensor(x)
            mask[row, width - len(x):] = 1
        n = max(r.output_len for r in batch)
        steps = StepTimes()
        sent = time.perf_counter()
        out = self.model.generate(input_ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0, streamer=steps)
        results = []
        for row, request in enumerate(batch):
            times = steps.times[:request.output_len]
            tokens = out[row, width:width + request.output_len].tolist()
            results.append(RequestResult(
                success=bool(times), prompt_len=len(ids[row]), output_tokens=len(times),
                ttft=times[0] - sent if times else 0.0,
                itl=[b - a for a, b in zip(times, times[1:])],
                latency=(times[-1] if times else time.perf_counter()) - sent,
                generated_text=self.tokenizer.decode(tokens), start_time=sent - run_started,
                error="" if times else "generate produced no token"))
        return results

    async def close(self) -> None:
        pass
