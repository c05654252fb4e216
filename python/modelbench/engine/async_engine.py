"""AsyncEngine: the C++ engine's background loop bridged to asyncio, for servers.

    engine = AsyncEngine(EngineArgs(model=...))
    async for delta in engine.generate("Hello", SamplingParams(max_tokens=32), "req-1"):
        print(delta.outputs[0].text, end="")

The C++ loop thread steps with the GIL released. When it queues outputs it
calls a notifier, which schedules a drain on the event loop
(``call_soon_threadsafe``): outputs reach waiting coroutines without polling.

Embeddings are computed on a thread of their own that ends with them
(``run_on_own_thread``), never on a pooled worker thread: see that function
for why.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from modelbench import _core
from modelbench.engine.embedding import EmbeddedBatch, EmbedInput, embed
from modelbench.engine.engine_args import EngineArgs, build_engine
from modelbench.engine.guide_worker import GuidedDecodingError, GuideWorker
from modelbench.engine.outputs import RequestOutput, RequestState
from modelbench.engine.sampling_params import SamplingParams

T = TypeVar("T")


async def run_on_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a new thread that ends when it returns, awaited without
    blocking the event loop (``asyncio.to_thread`` runs it on a pooled thread
    that lives on instead).

    For torch work beside a running engine. libgomp, torch's OpenMP runtime,
    keeps a pool of worker threads for every thread that has run a parallel
    region, until that thread ends; and once the process holds more pool
    threads than there are CPUs, every OpenMP wait spins only about 100
    times before it sleeps in the kernel. A decode step is a few hundred
    short parallel regions, so the engine's threads are then put to sleep
    and woken again around 150 times a step, which doubled the time of a
    batch-1 step on 2 cores (server/openmp.py; docs/performance.md, "Serving
    overhead at batch 1"). Work that ends its thread gives its pool back.

    If the caller is cancelled, ``fn`` still runs to the end; its result is
    dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the caller was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    name = f"modelbench-{getattr(fn, '__name__', 'work')}"
    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


class AsyncEngine:
    """One model served to many concurrent coroutines.

    ``generate`` yields deltas: each ``RequestOutput`` carries in
    ``outputs[0].text`` / ``.token_ids`` only what is new, and the last one
    has ``finished=True`` with the finish reason. Leaving the ``async for``
    early (or cancelling the task) aborts the request and frees its blocks.
    """

    def __init__(self, args: EngineArgs | None = None) -> None:
        self.args = args or EngineArgs()
        built = build_engine(self.args)
        self.engine, self.config, self.runner = built.engine, built.config, built.runner
        self.tokenizer = built.checkpoint.tokenizer
        self.architecture = built.checkpoint.architecture
        # Fill what a request leaves out (the model's generation config; see EngineArgs).
        self.sampling_defaults = built.sampling_defaults
        eos = self.config.eos_token_id if self.config.eos_token_id >= 0 else None
        self.guides = GuideWorker(self.engine, self.tokenizer, self.config.vocab_size, eos)
        self._queues: dict[str, asyncio.Queue[_core.RequestOutput]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._started:
            if loop is not self._loop:
                raise RuntimeError("an AsyncEngine serves one event loop; create one per loop")
            return
        self._loop = loop

        def notify() -> None:
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

        self.engine.set_output_notifier(notify)
        self.engine.start()
        self._started = True

    def _drain(self) -> None:
        for out in self.engine.get_outputs(0.0):
            queue = self._queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    async def generate(
        self,
        prompt: str | list[int],
        sampling_params: SamplingParams | None = None,
        request_id: str | None = None,
        priority: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Stream one request's deltas. ``priority`` (lower first) defaults to
        ``sampling_params.priority``. Raises ValueError for bad input before
        anything runs."""
        self._ensure_started()
        params = sampling_params or SamplingParams()
        if params.n != 1:
            raise ValueError(
                f"AsyncEngine.generate streams one sequence: n must be 1, got {params.n}"
            )
        request_id = request_id or uuid.uuid4().hex
        if isinstance(prompt, str):
            text: str | None = prompt
            # Tokenizing a long prompt takes time: keep it off the event loop.
            ids = await asyncio.to_thread(self.tokenizer.encode, prompt)
        else:
            text, ids = None, list(prompt)
        if request_id in self._queues:
            raise ValueError(f"request_id {request_id!r} is already in use")
        matcher = None
        if params.guided is not None:
            # Compiling a new constraint (and the first one's tokenizer tables) takes time.
            matcher = await asyncio.to_thread(self.guides.matcher, params.guided)
        eos = self.config.eos_token_id if self.config.eos_token_id >= 0 else None
        state = RequestState(request_id, text, ids, params, self.tokenizer, eos)
        queue: asyncio.Queue[_core.RequestOutput] = asyncio.Queue()
        self._queues[request_id] = queue
        try:
            self.engine.add_request(
                request_id, ids, params.to_core(), params.priority if priority is None else priority
            )
        except BaseException:
            del self._queues[request_id]
            raise
        if matcher is not None:
            self.guides.attach(request_id, matcher)
        finished = False
        try:
            while not finished:
                out = await queue.get()
                stopped = state.update(out)
                if stopped:
                    self.engine.abort(request_id)
                finished = state.finished
                if finished and matcher is not None and state.finish_reason == "abort":
                    error = self.guides.pop_error(request_id)
                    if error is not None:
                        raise GuidedDecodingError(f"guided decoding stopped: {error}")
                delta = state.completion(delta=True)
                if delta.text or delta.token_ids or finished:
                    yield RequestOutput(
                        request_id,
                        text,
                        ids,
                        [delta],
                        finished,
                        state.prompt_logprobs,
                        state.metrics,
                    )
        finally:
            if not finished:
                self.engine.abort(request_id)  # client went away: free its blocks
            self._queues.pop(request_id, None)

    async def embed(self, inputs: EmbedInput) -> EmbeddedBatch:
        """Embeddings of the inputs (see modelbench.engine.embedding), computed on a
        thread of their own beside the engine's steps: the event loop never waits."""
        return await run_on_own_thread(embed, self.runner, self.tokenizer, inputs)

    async def abort(self, request_id: str) -> bool:
        """End a request; False when it is not running."""
        return bool(self.engine.abort(request_id))

    @property
    def max_model_len(self) -> int:
        """Prompt plus output tokens one sequence may hold."""
        return int(self.config.scheduler.max_model_len)

    def is_healthy(self) -> bool:
        """False once the engine's loop thread has stopped after starting (it
        starts with the first request, so an engine not yet used is healthy)."""
        return not self._started or bool(self.engine.is_running)

    def stats(self) -> _core.EngineStats:
        """Counters and the scheduler's state (queue lengths, KV cache usage)."""
        return self.engine.stats()

    def shutdown(self) -> None:
        """Stop the loop thread; unfinished requests end with 'abort'."""
        self.engine.set_output_notifier(None)
        self.engine.shutdown()
        self.guides.shutdown()
        self._started = False
