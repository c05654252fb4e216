"""TrafficMiddleware: what happens to every HTTP request around the routes.

- counts the requests in flight, so that a draining server knows when it is
  idle (server/runner.py);
- while draining, refuses new requests with 503, an OpenAI error body and
  ``Retry-After``, except the probes and /metrics;
- observes the per-route HTTP metrics (server/metrics.py), and says which
  protocol a request came in as: a gRPC call runs through the app in
  process (server/grpc/asgi_call.py), is counted in flight and refused
  while draining like any request, and its own metrics are the gRPC
  service's;
- writes one access log line per request when its response ends (for a
  stream: when the body ends or the client goes away), on the
  ``modelbench.access`` logger; server/log.py formats it as JSON or text.

Plain ASGI rather than BaseHTTPMiddleware, which would sit between a
streaming response and the client's disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator

from starlette.datastructures import State
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbench.server.errors import error_response
from modelbench.server.grpc.scope import grpc_method
from modelbench.server.prometheus import (
    UNMATCHED_ROUTE,
    ServerMetrics,
    current_metrics,
    current_protocol,
)

access_logger = logging.getLogger("modelbench.access")

# Answered while draining: load balancers and scrapers must still see the
# process, and /ready is how they learn it is going away.
ALWAYS_OPEN = frozenset({"/health", "/ready", "/metrics"})
# Probes and scrapes come every few seconds: logged at DEBUG, not INFO.
QUIET_ROUTES = ALWAYS_OPEN
DRAIN_RETRY_AFTER_S = 5


class Traffic:
    """HTTP requests in flight in one app."""

    def __init__(self) -> None:
        self.num_in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.num_in_flight += 1
        self._idle.clear()

    def end(self) -> None:
        self.num_in_flight -= 1
        assert self.num_in_flight >= 0, "more HTTP requests ended than began"
        if self.num_in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is in flight; False if ``timeout_s`` passes first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def route_template(scope: Scope) -> str:
    """The matched route's path template (the router records the route in
    the scope; a request refused before routing is matched here), or one
    fixed value for paths no route matches."""
    route = scope.get("route") or match_route(scope)
    path = getattr(route, "path", None)
    return f"{scope.get('root_path', '')}{path}" if path else UNMATCHED_ROUTE


def match_route(scope: Scope) -> BaseRoute | None:
    """The endpoint route the router would pick, for a request answered
    before routing (refused while draining)."""
    for route in endpoint_routes(getattr(scope.get("app"), "routes", ())):
        match, _ = route.matches(dict(scope))  # a copy: this must not route the request
        if match is not Match.NONE:
            return route
    return None


def endpoint_routes(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """Routes with a path template, through FastAPI's wrappers of included
    routers (``original_router``) and mounted routers (``routes``)."""
    for route in routes:
        if isinstance(route, Route):
            yield route
            continue
        inner = getattr(route, "original_router", route)
        yield from endpoint_routes(getattr(inner, "routes", ()))


class TrafficMiddleware:
    """See the module docstring. ``state`` is the app's: it holds ``traffic``,
    ``metrics`` and the ``draining`` flag."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traffic: Traffic = self.state.traffic
        metrics: ServerMetrics = self.state.metrics
        started = time.monotonic()
        status = 500  # what the client gets if the app raises before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = current_metrics.set(metrics)
        method = grpc_method(scope)
        protocol_token = current_protocol.set("http" if method is None else "grpc")
        traffic.begin()
        try:
            if self.state.draining and scope["path"] not in ALWAYS_OPEN:
                await refuse_while_draining(scope, receive, send_with_status)
            else:
                await self.app(scope, receive, send_with_status)
        finally:
            traffic.end()
            current_metrics.reset(token)
            current_protocol.reset(protocol_token)
            duration_s = time.monotonic() - started
            if method is None:
                route = route_template(scope)
                metrics.observe_http(scope["method"], route, status, duration_s)
            else:
                route = method
            log_access(scope, route, status, duration_s)


async def refuse_while_draining(scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(
        503,
        "the server is shutting down and accepts no new requests; retry on another replica",
        code="server_draining",
        type="service_unavailable",
        headers={"Retry-After": str(DRAIN_RETRY_AFTER_S), "Connection": "close"},
    )
    await response(scope, receive, send)


def log_access(scope: Scope, route: str, status: int, duration_s: float) -> None:
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    if not access_logger.isEnabledFor(level):
        return
    state = scope.get("state", {})
    client = scope.get("client")
    fields = {
        "request_id": state.get("request_id"),
        "method": scope["method"],
        "path": scope["path"],
        "route": route,
        "model": state.get("model"),
        "status": status,
        "latency_ms": round(duration_s * 1000, 2),
        "client": client[0] if client else None,
    }
    access_logger.log(
        level,
        '%s "%s %s" %d %.1fms model=%s request_id=%s',
        fields["client"],
        fields["method"],
        fields["path"],
        status,
        fields["latency_ms"],
        fields["model"] or "-",
        fields["request_id"],
        extra=fields,
    )
