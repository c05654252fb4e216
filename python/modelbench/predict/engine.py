"""PredictEngine: one tensor model served to many concurrent callers.

    engine = PredictEngine("model.pt")                 # model.json beside it
    out = await engine.predict({"features": [[0.1, ...]]})
    out.outputs["probabilities"], out.class_ids, out.labels, out.confidences

Requests go to the C++ dynamic batcher (``_core.TensorModel``); a thread
of ours waits for results with the GIL released and resolves each caller's
future on its event loop. Inputs are checked against the config first: a
missing or unknown input, or a shape or dtype the model does not take, is
an ``InvalidParameter`` naming the input, the shape expected and the shape
received.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelbench import _core
from modelbench.engine.errors import INPUT_MISMATCH, InvalidParameter
from modelbench.predict.config import DTYPES, TensorModelConfig, TensorSpec, load_config


def _mismatch(message: str, param: str) -> InvalidParameter:
    return InvalidParameter(message, param, INPUT_MISMATCH)


class QueueFull(RuntimeError):
    """The model's queue is full: the caller answers 429 and retries later."""


@dataclass
class PredictOutput:
    """One request's outputs (each [rows, ...]) and, for a classifier, per row
    the class id, its label and its score."""

    outputs: dict[str, torch.Tensor]
    class_ids: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)


def _shape(spec: TensorSpec) -> str:
    return "[" + ", ".join("any" if d == -1 else str(d) for d in spec.shape) + "]"


class PredictEngine:
    def __init__(
        self,
        path: str | Path,
        config: TensorModelConfig | None = None,
        device: str = "cpu",
    ) -> None:
        self.path = Path(path)
        self.config = config or load_config(self.path)
        self.model = _core.TensorModel(
            str(self.path),
            len(self.config.inputs),
            len(self.config.outputs),
            device,
            self.config.dynamic_batching.to_core(),
        )
        self._futures: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        # The thread holds the engine weakly (one dropped without shutdown is
        # freed, and the thread ends), and is stopped before the interpreter
        # exits: a daemon thread ended while it waits in C++ would abort it.
        self._thread = threading.Thread(
            target=_results_loop, args=(weakref.ref(self),), name="modelbench-predict", daemon=True
        )
        self._thread.start()
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    @property
    def max_batch_size(self) -> int:
        return self.config.dynamic_batching.max_batch_size

    def check_inputs(self, inputs: dict[str, Any]) -> list[torch.Tensor]:
        """The inputs as tensors in the module's order. ``inputs`` maps names
        to nested lists or tensors; a single row may drop the batch
        dimension. Raises InvalidParameter (param ``inputs.<name>``)."""
        if not isinstance(inputs, dict) or not inputs:
            raise _mismatch("inputs must be an object of input name -> values", "inputs")
        names = [s.name for s in self.config.inputs]
        unknown = [n for n in inputs if n not in names]
        if unknown:
            raise _mismatch(
                f"unknown input {unknown[0]!r}; this model takes {', '.join(names)}",
                f"inputs.{unknown[0]}",
            )
        tensors = []
        for spec in self.config.inputs:
            if spec.name not in inputs:
                raise _mismatch(
                    f"input {spec.name!r} is missing: shape {_shape(spec)}, {spec.dtype}",
                    f"inputs.{spec.name}",
                )
            tensors.append(self._tensor(spec, inputs[spec.name]))
        rows = {t.shape[0] for t in tensors}
        if len(rows) > 1:
            raise _mismatch(f"the inputs have different numbers of rows: {sorted(rows)}", "inputs")
        return tensors

    def _tensor(self, spec: TensorSpec, value: Any) -> torch.Tensor:
        param = f"inputs.{spec.name}"
        dtype = DTYPES[spec.dtype]
        try:
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
        except (TypeError, ValueError, RuntimeError) as e:
            raise _mismatch(
                f"input {spec.name!r} is not a rectangular array of numbers: {e}", param
            ) from e
        if t.is_floating_point() and not dtype.is_floating_point and dtype != torch.bool:
            raise _mismatch(
                f"input {spec.name!r} holds floats; the model takes {spec.dtype}", param
            )
        if t.dim() == len(spec.shape) - 1:
            t = t.unsqueeze(0)  # one row without its batch dimension
        got = list(t.shape)
        if len(got) != len(spec.shape) or any(
            d != -1 and g != d for g, d in zip(got[1:], spec.shape[1:])
        ):
            raise _mismatch(
                f"input {spec.name!r} has shape {got}; the model expects {_shape(spec)}", param
            )
        if got[0] < 1 or got[0] > self.max_batch_size:
            raise _mismatch(
                f"input {spec.name!r} has {got[0]} rows; this model takes 1 to "
                f"{self.max_batch_size} per request (max_batch_size)",
                param,
            )
        return t.to(dtype).contiguous()

    async def predict(
        self, inputs: dict[str, Any], timeout_s: float | None = None
    ) -> PredictOutput:
        """Run one request through the batcher. InvalidParameter for bad
        inputs, QueueFull when the queue is full, TimeoutError when it waited
        past ``timeout_s``, RuntimeError when its batch failed."""
        tensors = self.check_inputs(inputs)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the model is shut down")
            ticket = self.model.submit(tensors, timeout_s or 0.0)
            if ticket < 0:
                raise QueueFull(
                    f"the model's queue is full ({self.config.dynamic_batching.max_queue_size} "
                    "requests waiting); retry later"
                )
            self._futures[ticket] = (loop, future)
        result = await future
        if result.error:
            if result.timed_out:
                raise TimeoutError(result.error)
            raise RuntimeError(f"the model failed: {result.error}")
        return self._output(list(result.outputs))

    def _output(self, outputs: list[torch.Tensor]) -> PredictOutput:
        out = PredictOutput({s.name: t for s, t in zip(self.config.outputs, outputs)})
        name = self.config.classifier_output
        if name is not None:
            scores = out.outputs[name].float()
            best = scores.max(dim=1)
            out.class_ids = [int(i) for i in best.indices]
            out.confidences = [float(v) for v in best.values]
            labels = self.config.labels
            out.labels = [labels[i] if labels else str(i) for i in out.class_ids]
        return out

    def _deliver(self, results: list[_core.TensorResult]) -> bool:
        """Resolve the results' futures, a batch's at once: one wake-up of
        each caller's loop, not one per request; False once shut down and
        drained."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        with self._lock:
            for result in results:
                entry = self._futures.pop(result.ticket, None)
                if entry is not None:
                    loop, future = entry
                    by_loop.setdefault(loop, []).append((future, result))
            drained = self._closed and not self._futures
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:
                pass  # the caller's loop is closed: nobody waits
        return not drained

    def stats(self) -> _core.DynamicBatcherStats:
        return self.model.stats()

    def shutdown(self) -> None:
        """Stop the batcher: requests still waiting fail ("shutting down")."""
        self.model.shutdown()
        with self._lock:
            self._closed = True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def _settle(settled: list[tuple[asyncio.Future[Any], _core.TensorResult]]) -> None:
    for future, result in settled:
        if not future.done():  # a caller that gave up (cancelled) is skipped
            future.set_result(result)


def _results_loop(ref: weakref.ref[PredictEngine]) -> None:
    while True:
        engine = ref()
        if engine is None:
            return
        model = engine.model
        del engine  # not held while waiting
        results = model.wait_results(0.5)
        engine = ref()
        if engine is None or not engine._deliver(results):
            return
        del engine, model


def _shutdown_if_alive(ref: weakref.ref[PredictEngine]) -> None:
    engine = ref()
    if engine is not None:
        engine.shutdown()
