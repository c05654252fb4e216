"""create_app(settings): the FastAPI app over a registry of model versions.

The models load in the background once the server starts, so that /health
answers at once and /ready turns 200 when every one is in memory. Every error
reaches the client as OpenAI's ``{"error": {...}}`` body (server/errors.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

from modelbench._version import __version__
from modelbench.config import Settings
from modelbench.eval.sandbox import bubblewrap_available
from modelbench.gateway.metrics import SharedStateCollector, UpstreamCollector
from modelbench.gateway.service import Gateway
from modelbench.gateway.shared_breakers import SharedBreakers
from modelbench.gateway.shared_state import SharedState
from modelbench.server.auth import auth_required, authenticate, require_admin
from modelbench.server.auth_failures import AuthFailures
from modelbench.server.cache_hooks import build_cache
from modelbench.server.errors import install_error_handlers
from modelbench.server.jwt_auth import JwtVerifier
from modelbench.server.jwt_auth import configured as jwt_configured
from modelbench.server.keys import KeyStore
from modelbench.server.limits import BodySizeMiddleware
from modelbench.server.openapi import install_openapi
from modelbench.server.persistence import Store, StoreCollector
from modelbench.server.prometheus import ServerMetrics
from modelbench.server.ratelimit import RateLimiter
from modelbench.server.recorder import RecordMiddleware
from modelbench.server.registry import ModelRegistry
from modelbench.server.registry_store import RegistryStore
from modelbench.server.routes import (
    admin,
    admin_registry,
    admin_upstreams,
    batch,
    cache_admin,
    chat,
    compare,
    completions,
    embeddings,
    health,
    infer,
    models,
    predict,
    requests,
    responses,
    runs,
    tokenize,
    upstreams,
    verify,
)
from modelbench.server.routes import metrics as metrics_route
from modelbench.server.shared_ratelimit import SharedRateLimiter
from modelbench.server.tracing_middleware import TracingMiddleware
from modelbench.server.traffic import Traffic, TrafficMiddleware
from modelbench.tracing import make_provider, tracer_of
from modelbench.ui.mount import install_ui

logger = logging.getLogger("modelbench.server")

REQUEST_ID_HEADER = "x-request-id"
GRPC_GRACE_S = 2  # gRPC calls still running when the server stops (after the drain)


class RequestIdMiddleware:
    """Echo the client's X-Request-ID, or make one, on every response.

    Plain ASGI rather than BaseHTTPMiddleware, which would sit between a
    streaming response and the client's disconnect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = REQUEST_ID_HEADER.encode()
        given = dict(scope["headers"]).get(header)
        request_id = given.decode("latin-1") if given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != header]
                message["headers"] = [*headers, (header, request_id.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The app. The models file and flags are read here, so a bad one fails
    before the server binds; the models themselves load after startup.
    Traces go to ``tracer_provider`` when given (tests), else where the
    settings and ``OTEL_*`` say (modelbench/tracing.py), else nowhere."""
    settings = settings or Settings()
    own_provider = tracer_provider is None
    if tracer_provider is None:
        tracer_provider = make_provider(settings.otlp_traces_endpoint, __version__)
    tracer = tracer_of(tracer_provider)
    declared = settings.model_configs()
    registry = registry or ModelRegistry(max_queue=settings.max_queue)
    for name, policy in declared.routing.items():
        registry.set_policy(name, policy)
    # Always a gateway, upstreams or not: an admin (or the registry) may add some.
    registry.gateway = Gateway(declared.upstreams, declared.gateway)
    store = Store.open(settings)  # a bad database URL fails here; an unreachable one never does
    keys = KeyStore(settings.keys_file)  # a corrupt keys file fails here
    # Rate limits and breaker states shared with other processes; a bad URL fails
    # here, an unreachable Redis never does (each process then uses its own).
    shared = SharedState(settings.redis_url) if settings.redis_url else None
    shared_breakers = (
        SharedBreakers(shared, registry.gateway)
        if shared is not None and registry.gateway is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Known at once, so that requests get 503 "loading" rather than 404.
        handles = [registry.add(config) for config in declared.models]

        async def load_all() -> None:
            registry_store = app.state.registry_store
            # The models file seeds the registry; what the store says was unloaded stays so.
            skip = await registry_store.seed(declared) if registry_store is not None else set()
            for handle in handles:
                if handle.id in skip:
                    registry.discard(handle)
                    continue
                try:
                    await registry.start(handle)
                except Exception:  # /ready reports it; the process stays up for /health
                    logger.exception("loading %s failed", handle.id)

        if not auth_required(app.state):
            logger.warning(
                "NO API KEYS: this server is OPEN to anyone who can reach %s:%s; create a "
                "key with `modelbench keys create --name NAME` (keys file %s)",
                settings.host,
                settings.port,
                keys.path,
            )
        if bubblewrap_available():
            logger.info("POST /v1/verify runs generated code under bubblewrap isolation")
        else:
            logger.warning(
                "POST /v1/verify runs generated code under rlimits isolation only (no network "
                "or filesystem isolation): install bubblewrap and run as root for namespaces"
            )
        grpc_server = None
        if settings.grpc_port is not None:  # beside HTTP, in this loop; a taken port fails here
            from modelbench.server.grpc.server import start_grpc_server

            grpc_server = await start_grpc_server(
                app, settings.host, settings.grpc_port, settings.max_body_bytes
            )
        app.state.started = True
        loading = asyncio.create_task(load_all())
        gateway = registry.gateway
        checking = asyncio.create_task(gateway.start()) if gateway is not None else None
        if shared is not None:
            await shared.start()
        if app.state.cache is not None:
            await app.state.cache.start()
        if shared_breakers is not None:
            shared_breakers.start()
        store.start(app)  # migrations, the record writer, the in-server batch worker
        following, stop_following = None, asyncio.Event()
        if app.state.registry_store is not None:  # admin loads kept in the store
            following = asyncio.create_task(
                app.state.registry_store.follow(registry, settings.registry_poll_s, stop_following)
            )
        try:
            yield
        finally:
            if grpc_server is not None:  # the drain is over: what is left gets the grace
                await grpc_server.stop(GRPC_GRACE_S)
            stop_following.set()
            if following is not None:
                await asyncio.gather(following, return_exceptions=True)
            await store.close()  # the worker's running jobs finish first
            if shared_breakers is not None:
                await shared_breakers.close()
            await asyncio.shield(loading)  # a thread cannot be cancelled: let it finish
            if checking is not None and gateway is not None:
                checking.cancel()
                await asyncio.gather(checking, return_exceptions=True)
                await gateway.close()
            await registry.shutdown()
            if shared is not None:
                await shared.close()
            if app.state.cache is not None:
                await app.state.cache.close()
            if tracer_provider is not None:  # the spans still batched go out
                await asyncio.to_thread(tracer_provider.force_flush)
                if own_provider:
                    await asyncio.to_thread(tracer_provider.shutdown)

    app = FastAPI(title="modelbench", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.store = store
    app.state.keys = keys
    app.state.tracer = tracer  # None: tracing off
    store.writer.tracer = registry.gateway.tracer = tracer
    app.state.jwt = JwtVerifier(settings) if jwt_configured(settings) else None
    app.state.registry_store = (
        RegistryStore(store, follow_models=settings.registry_models)
        if settings.registry == "store"
        else None
    )
    app.state.limiter = RateLimiter()  # also the fallback while Redis is away
    app.state.auth_failures = AuthFailures(
        settings.auth_max_failures, settings.auth_failure_window_s
    )
    app.state.shared_limiter = (
        SharedRateLimiter(shared, app.state.limiter) if shared is not None else None
    )
    app.state.started = False
    app.state.draining = False
    app.state.traffic = Traffic()  # requests in flight, for the drain
    app.state.metrics = ServerMetrics(registry)
    app.state.metrics.registry.register(StoreCollector(store))
    # The response cache (None: off for every model); semantic mode without its
    # embedding model served fails here.
    app.state.cache = build_cache(settings, declared, registry, keys, app.state.metrics.registry)
    if registry.gateway is not None:
        app.state.metrics.registry.register(UpstreamCollector(registry.gateway))
    if shared is not None:
        app.state.metrics.registry.register(SharedStateCollector(shared))
    app.add_middleware(RecordMiddleware)  # innermost: the request log
    app.add_middleware(BodySizeMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        TrafficMiddleware, state=app.state
    )  # inside RequestIdMiddleware: sees the id
    if tracer is not None:  # the server span: around the record, inside the request id
        app.add_middleware(TracingMiddleware, tracer=tracer)
    app.add_middleware(RequestIdMiddleware)
    if settings.cors_origins:  # off unless asked: browsers then refuse other origins' pages
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-API-Key",
                "X-Request-ID",
                "Cache-Control",  # no-cache / no-store: the response cache
            ],
            expose_headers=["X-Request-ID", "Retry-After", "X-Modelbench-Cache"],
        )
    install_error_handlers(app)
    keyed = [Depends(authenticate)]
    for module in (
        completions,
        chat,
        responses,
        embeddings,
        infer,
        predict,
        models,
        batch,
        requests,
        upstreams,
        compare,
        verify,
        tokenize,
        runs,
    ):
        app.include_router(module.router, dependencies=keyed)
    app.include_router(admin.router, dependencies=[Depends(require_admin)])
    app.include_router(admin_registry.router, dependencies=[Depends(require_admin)])
    app.include_router(admin_upstreams.router, dependencies=[Depends(require_admin)])
    app.include_router(cache_admin.router, dependencies=[Depends(require_admin)])
    app.include_router(health.router)  # probes answer without a key
    app.include_router(
        metrics_route.router, dependencies=keyed if settings.metrics_require_key else []
    )
    install_ui(app)  # the web page at /ui, over the routes above
    install_openapi(app)  # every status code each route answers, and the security schemes
    return app
