"""ModelRegistry: the model versions a server holds, and which one serves a
request.

Each version (``name:version``) owns one AsyncEngine. ``"name:version"`` pins
a version; a bare ``"name"`` is routed by the name's policy among the loaded
versions that serve the task:

- ``pinned``: the default version (the one declared ``default``, else the
  first loaded);
- ``canary``: at random, in proportion to the versions' weights (90/10);
- ``least_outstanding``: the version with the fewest requests in flight.

A version is admitted a bounded number of requests (``max_queue`` beyond its
``max_num_seqs``); past that a request is refused with 429 rather than queued
without bound. Unloading stops routing to the version at once, lets its
requests in flight finish (up to a timeout) and then frees its engine, while
the other versions keep serving.

The versions the server was started with are *declared* (``add``); those an
admin loads at run time (``begin_load``) build their engine in a background
task, one load at a time: a second load while one is in progress is refused
(409), so loads queue nowhere and never hold more than one model's weights
in flight. Serving goes on meanwhile, on the event loop, while the load
runs in a worker thread: one that ends with the load when libgomp's spin is
bounded (server/openmp.py says why).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

from modelbench.config import ModelConfig, RoutingPolicy
from modelbench.engine.async_engine import AsyncEngine, run_on_own_thread
from modelbench.engine.encoder_engine import EncoderEngine
from modelbench.gateway.service import Gateway
from modelbench.gateway.upstream import UpstreamPool
from modelbench.predict.engine import PredictEngine
from modelbench.server.errors import APIError
from modelbench.server.openmp import spin_is_bounded

logger = logging.getLogger("modelbench.server")


class ModelState(str, Enum):
    """Where a model version is in its life: ``loading`` until its engine is
    built, then ``ready`` (or ``failed``, with the error); ``unloading`` once
    routing to it stopped, until its requests in flight finish."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"

    def __str__(self) -> str:
        return self.value


@dataclass(eq=False)
class ModelHandle:
    """One loaded (or loading) model version."""

    config: ModelConfig
    engine: AsyncEngine | None = None
    # An embedding model (a BERT encoder) instead of ``engine``: it serves "embed" alone.
    encoder: EncoderEngine | None = None
    # A tensor model (TorchScript behind the dynamic batcher): it serves "predict" alone.
    predictor: PredictEngine | None = None
    state: ModelState = ModelState.LOADING
    error: str | None = None
    outstanding: int = 0  # requests admitted and not yet finished
    by_priority: Counter[int] = field(default_factory=Counter)  # outstanding, per priority
    loaded_at: float = field(default_factory=time.time)  # when its load began
    finished_at: float | None = None  # when its load ended (ready or failed)
    declared: bool = True  # the server was started with it (False: loaded by an admin)
    load_task: asyncio.Task[None] | None = None  # an admin load running in the background
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def max_model_len(self) -> int | None:
        if self.encoder is not None:
            return self.encoder.max_model_len
        return self.engine.max_model_len if self.engine is not None else None

    @cached_property
    def tasks(self) -> list[str]:
        """The tasks this version serves: a tensor model, predict alone
        (found once: its file does not change kind while it is held, and
        every request's routing asks)."""
        return ["predict"] if self.config.is_tensor_model() else list(self.config.tasks)

    def serves(self, task: str) -> bool:
        return task in self.tasks

    def begin(self, priority: int = 0) -> None:
        self.outstanding += 1
        self.by_priority[priority] += 1
        self._idle.clear()

    def end(self, priority: int = 0) -> None:
        self.outstanding -= 1
        self.by_priority[priority] -= 1
        if not self.by_priority[priority]:
            del self.by_priority[priority]
        assert self.outstanding >= 0, f"{self.id}: more requests ended than began"

        if self.outstanding == 0:
            self._idle.set()

    def outstanding_before(self, priority: int) -> int:
        """Requests in flight that run before or with one of ``priority``."""
        return sum(n for level, n in self.by_priority.items() if level <= priority)


class ModelRegistry:
    """Names and versions to handles; loading, unloading and routing."""

    def __init__(self, max_queue: int = 256, rng: random.Random | None = None) -> None:
        self.max_queue = max_queue
        self._handles: dict[str, ModelHandle] = {}  # by id, in load order
        self._policies: dict[str, RoutingPolicy] = {}
        self._rng = rng or random.Random()
        self._loads: set[asyncio.Task[None]] = set()  # admin loads running in the background
        self._declared_names: dict[str, None] = {}  # in order: the names started with
        self.gateway: Gateway | None = None  # names served by upstreams, when configured

    # ---- what is there -------------------------------------------------

    def handles(self) -> list[ModelHandle]:
        return list(self._handles.values())

    def ready(self) -> list[ModelHandle]:
        return [h for h in self._handles.values() if h.state == ModelState.READY]

    def versions(self, name: str) -> list[ModelHandle]:
        return [h for h in self._handles.values() if h.name == name]

    def get(self, model_id: str) -> ModelHandle | None:
        """The version ``name:version``, whatever its state."""
        return self._handles.get(model_id)

    def loading(self) -> list[ModelHandle]:
        return [h for h in self._handles.values() if h.state == ModelState.LOADING]

    def is_starting(self) -> bool:
        """A version the server was started with is still loading."""
        return any(h.declared for h in self.loading())

    def declared_names(self) -> list[str]:
        """The names the server was started with (its versions may be gone since)."""
        return list(self._declared_names)

    def ready_versions(self, name: str) -> list[ModelHandle]:
        return [h for h in self.versions(name) if h.state == ModelState.READY]

    def policy(self, name: str) -> RoutingPolicy:
        return self._policies.get(name, "pinned")

    def set_policy(self, name: str, policy: RoutingPolicy) -> None:
        self._policies[name] = policy

    def available_ids(self) -> list[str]:
        """Every name a client may send: bare names first, then name:version,
        then the names upstreams serve."""
        live = [h for h in self._handles.values() if h.state != ModelState.UNLOADING]
        names = list(dict.fromkeys(h.name for h in live))
        remote = list(self.gateway.pools) if self.gateway is not None else []
        return names + [h.id for h in live] + remote

    def remote(self, model: str) -> UpstreamPool | None:
        """The upstreams serving ``model``, when it is a remote name."""
        return self.gateway.pool(model) if self.gateway is not None else None

    # ---- loading and unloading ----------------------------------------

    def add(self, config: ModelConfig, declared: bool = True) -> ModelHandle:
        """Register a version (state "loading"); 409 if it is there already.
        An admin load (``declared=False``) may replace a version whose own
        admin load failed."""
        existing = self._handles.get(config.id)
        if existing is not None:
            if declared or not self._replaceable(existing):
                raise APIError(
                    409,
                    f"model {config.id} is already loaded ({existing.state}); unload it first "
                    "or pick another version",
                    param="version",
                    code="model_exists",
                )
            del self._handles[config.id]
        if config.default:
            for other in self.versions(config.name):
                other.config = other.config.model_copy(update={"default": False})
        handle = ModelHandle(config, declared=declared)
        self._handles[config.id] = handle
        if declared:
            self._declared_names.setdefault(config.name)
        return handle

    def discard(self, handle: ModelHandle) -> None:
        """Drop a declared version before its load starts (the registry in the
        store says it was unloaded): the server is not started with it."""
        assert handle.state == ModelState.LOADING and handle.engine is None
        del self._handles[handle.id]
        self.undeclare_if_empty(handle.name)

    def undeclare_if_empty(self, name: str) -> None:
        """A name none of whose versions is held any more is no longer one the
        server must serve to be ready (the registry in the store removed it)."""
        if not self.versions(name):
            self._declared_names.pop(name, None)

    @staticmethod
    def _replaceable(handle: ModelHandle) -> bool:
        return not handle.declared and handle.state == ModelState.FAILED

    def check_can_load(self, model_id: str) -> None:
        """An admin load of ``model_id`` may begin: 409 while another version
        loads (one load at a time), or if this one is there already (a
        failed admin load may be retried)."""
        busy = self.loading()
        if busy:
            raise APIError(
                409,
                f"model {busy[0].id} is loading; one load runs at a time. Retry when "
                f"GET /v1/admin/models/{busy[0].id} says ready or failed",
                code="load_in_progress",
                headers={"Retry-After": "5"},
            )
        existing = self._handles.get(model_id)
        if existing is not None and not self._replaceable(existing):
            raise APIError(
                409,
                f"model {model_id} is already loaded ({existing.state}); unload it first "
                "or pick another version",
                param="version",
                code="model_exists",
            )

    def begin_load(self, config: ModelConfig) -> ModelHandle:
        """Add an admin-loaded version and build its engine in the background;
        its handle says how the load goes. The 409s of ``check_can_load``."""
        self.check_can_load(config.id)
        handle = self.add(config, declared=False)
        task = asyncio.create_task(self._load_in_background(handle))
        handle.load_task = task
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        return handle

    async def _load_in_background(self, handle: ModelHandle) -> None:
        try:
            await self.start(handle)
        except Exception:  # the handle holds the error, for GET /v1/admin/models/{id}
            pass

    async def start(self, handle: ModelHandle) -> ModelHandle:
        """Build an added version's engine off the event loop. A failure
        leaves the handle in state "failed" with the error, and re-raises.

        With libgomp's spin bounded, the build runs on a thread that ends
        with it, so that the engine's loop thread keeps the process's only
        OpenMP pool (server/openmp.py); otherwise on a pooled thread, which
        keeps every OpenMP wait short whatever the host's load."""
        config = handle.config
        build = run_on_own_thread if spin_is_bounded() else asyncio.to_thread
        try:
            predictor = None
            if config.is_tensor_model():
                assert config.path is not None
                predictor = await build(PredictEngine, config.path)
                engine, encoder = None, None
            elif config.is_embedding_model():
                assert config.path is not None
                encoder = await build(EncoderEngine, config.path)
                engine = None
            else:
                engine, encoder = await build(AsyncEngine, config.engine_args()), None
        except Exception as exc:
            handle.state, handle.error = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            handle.finished_at = time.time()
            logger.error("loading %s failed: %s", config.id, handle.error)
            raise
        handle.finished_at = time.time()
        if handle.state == ModelState.UNLOADING:  # the server stopped while it loaded
            if engine is not None:
                await asyncio.to_thread(engine.shutdown)
            if predictor is not None:
                await asyncio.to_thread(predictor.shutdown)
            return handle
        handle.engine, handle.encoder, handle.state = engine, encoder, ModelState.READY
        handle.predictor = predictor
        logger.info(
            "loaded %s from %s in %.1f s",
            config.id,
            config.path or "the default model",
            handle.finished_at - handle.loaded_at,
        )
        return handle

    @staticmethod
    def unload_refusal(handle: ModelHandle) -> None:
        """The 409 for unloading a version still loading."""
        raise APIError(
            409,
            f"model {handle.id} is still loading and cannot be unloaded yet; retry when "
            f"GET /v1/admin/models/{handle.id} says ready or failed",
            param="model",
            code="model_loading",
            headers={"Retry-After": "5"},
        )

    async def unload(self, model_id: str, timeout_s: float = 30.0) -> ModelHandle:
        """Stop routing to ``name:version``, wait for its requests in flight
        (up to ``timeout_s``; what is left then ends with "abort"), free it."""
        handle = self._handles.get(model_id)
        if handle is None or handle.state == ModelState.UNLOADING:
            raise APIError(
                404,
                f"model {model_id} is not loaded. Loaded: "
                f"{', '.join(h.id for h in self.handles()) or 'none'}",
                param="model",
                code="model_not_found",
                type="not_found_error",
            )
        if handle.state == ModelState.LOADING:  # its weights are half in memory, in a thread
            self.unload_refusal(handle)
        handle.state = ModelState.UNLOADING
        if handle.outstanding:
            try:
                await asyncio.wait_for(handle._idle.wait(), timeout_s)
            except TimeoutError:
                logger.warning(
                    "unloading %s: %d requests still running after %.0f s are aborted",
                    model_id,
                    handle.outstanding,
                    timeout_s,
                )
        del self._handles[model_id]
        await self._free(handle)
        logger.info("unloaded %s", model_id)
        return handle

    async def shutdown(self) -> None:
        """Free every version. A load in progress cannot be stopped (it runs
        in a thread): it is let finish and its engine freed at once."""
        for handle in self.loading():
            handle.state = ModelState.UNLOADING
        await asyncio.gather(*self._loads, return_exceptions=True)
        for handle in list(self._handles.values()):
            await self._free(handle)
        self._handles.clear()

    @staticmethod
    async def _free(handle: ModelHandle) -> None:
        """Stop a version's engine (or encoder, or tensor model) and drop it."""
        handle.encoder = None
        engine, handle.engine = handle.engine, None
        predictor, handle.predictor = handle.predictor, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)
        if predictor is not None:
            await asyncio.to_thread(predictor.shutdown)

    # ---- routing ------------------------------------------------------

    def resolve(self, model: str, task: str = "generate") -> ModelHandle:
        """The version that serves this request. 404 for a name nobody
        serves (listing those that are), 400 for a version that does not do
        the task, 503 while the version is still loading."""
        name, _, version = model.partition(":")
        candidates = self.versions(name)
        if version:
            candidates = [h for h in candidates if h.version == version]
        candidates = [h for h in candidates if h.state != ModelState.UNLOADING]
        if not candidates:
            raise APIError(
                404,
                f"The model {model!r} does not exist. Available models: "
                f"{', '.join(self.available_ids()) or 'none'}",
                param="model",
                code="model_not_found",
                type="not_found_error",
            )
        serving = [h for h in candidates if h.serves(task)]
        if not serving:
            tasks = sorted({t for h in candidates for t in h.tasks})
            raise APIError(
                400,
                f"model {model!r} does not serve the task {task!r}; it serves: {', '.join(tasks)}",
                param="task",
                code="task_not_supported",
            )
        ready = [h for h in serving if h.state == ModelState.READY]
        if not ready:
            failed = [h for h in serving if h.state == ModelState.FAILED]
            if failed and len(failed) == len(serving):
                raise APIError(
                    503,
                    f"model {model!r} failed to load: {failed[0].error}",
                    code="model_load_failed",
                    type="service_unavailable",
                )
            raise APIError(
                503,
                f"model {model!r} is still loading; retry when /ready says so",
                code="model_not_ready",
                type="service_unavailable",
                headers={"Retry-After": "5"},
            )
        if version or len(ready) == 1:
            return ready[0]
        return self._route(name, ready)

    def _route(self, name: str, ready: list[ModelHandle]) -> ModelHandle:
        policy = self.policy(name)
        if policy == "least_outstanding":
            return min(ready, key=lambda h: h.outstanding)
        if policy == "canary":
            weights = [h.config.weight for h in ready]
            if sum(weights) > 0:
                return self._rng.choices(ready, weights=weights)[0]
            return ready[0]
        defaults = [h for h in ready if h.config.default]
        return defaults[0] if defaults else ready[0]

    def admit(self, handle: ModelHandle, priority: int = 0) -> None:
        """Count a request against the version's bound, or refuse it (429).

        The bound counts the requests that would run before or with this
        one (priority lower or equal), so a flood of low-priority work never
        keeps a higher-priority request out: the scheduler then runs it
        first. However the priorities spread, a version holds at most twice
        its bound."""
        limit = self.max_queue + handle.config.max_num_seqs
        ahead = handle.outstanding_before(priority)
        if ahead >= limit or handle.outstanding >= 2 * limit:
            held = (
                f"{ahead} requests of priority {priority} or ahead of it in flight, its limit"
                if ahead >= limit
                else f"{handle.outstanding} requests in flight, twice its limit"
            )
            raise APIError(
                429,
                f"model {handle.id} has {held}; retry shortly",
                code="queue_full",
                type="rate_limit_error",
                headers={"Retry-After": "1"},
            )
        handle.begin(priority)
