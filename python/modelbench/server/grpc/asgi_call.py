"""One gRPC call run through the app in process, as the HTTP request it
stands for (the batch worker does the same over httpx: jobs/worker.py).

The request passes every middleware and dependency an HTTP request does:
the request id, the traffic middleware (counted in flight for the drain,
refused while draining), the request log, the API key and rate limits
(``authenticate`` reads the call's ``authorization`` or ``x-api-key``
metadata as headers), the route's validation, admission and engine. The
call's peer address is the request's client, so per-address limits and
failed-authentication counts apply to it too.

The app runs as a task of its own: when the gRPC client cancels, the call
says so (``disconnect``) and the route sees the client go away as it would
over HTTP (a stream stops and its engine request is aborted; a waiting
answer is a 499), while the task finishes its record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from starlette.types import ASGIApp, Message

from modelbench.server.grpc.scope import GRPC_EXTENSION

# Metadata passed on as the request's headers; anything else stays out (the
# batch worker's internal headers above all).
FORWARDED_METADATA = frozenset(
    {"authorization", "x-api-key", "x-request-id", "traceparent", "tracestate", "cache-control"}
)

_running: set[asyncio.Task] = set()  # the apps' tasks, held until they end


def peer_address(peer: str) -> tuple[str, int]:
    """grpc's peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``,
    ``unix:/path``) as an ASGI client ``(host, port)``."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        return host.strip("[]"), int(port) if port.isdigit() else 0
    return "unknown", 0


class AsgiCall:
    """The app's answer to one request: ``start()`` waits for its status,
    then ``chunks()`` (a stream's pieces) or ``read()`` (the whole body)."""

    def __init__(
        self,
        app: ASGIApp,
        grpc_method: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        metadata: Iterable[tuple[str, str | bytes]],
        peer: str,
    ) -> None:
        self._body = b"" if body is None else json.dumps(body).encode()
        headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in metadata
            if key.lower() in FORWARDED_METADATA and isinstance(value, str)
        ]
        if body is not None:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self._body)).encode()),
            ]
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},  # spec 2.0: a stream watches receive() for the disconnect
            "http_version": "2",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": peer_address(peer),
            "server": ("grpc", 0),
            "extensions": {GRPC_EXTENSION: {"method": grpc_method}},
        }
        self.status = 500
        self.headers: dict[str, str] = {}
        self._started = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._body_sent = False
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._done = False  # the response body has ended
        task = asyncio.get_running_loop().create_task(self._run(app))
        _running.add(task)
        task.add_done_callback(_running.discard)

    async def _run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self._receive, self._send)
        finally:
            self._started.set()  # an app that raised before answering: status 500
            self._chunks.put_nowait(None)

    async def _receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in message.get("headers", [])
            }
            self._started.set()
        elif message["type"] == "http.response.body" and not self._disconnected.is_set():
            chunk = message.get("body", b"")
            if chunk:
                self._chunks.put_nowait(chunk)
            if not message.get("more_body", False):
                self._chunks.put_nowait(None)

    async def start(self) -> int:
        """The response's status, once the app has answered."""
        await self._started.wait()
        return self.status

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as the app sends them."""
        while (chunk := await self._chunks.get()) is not None:
            yield chunk
        self._done = True

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def disconnect(self) -> None:
        """The gRPC client went away (or the call ended before the body did):
        the route sees its client disconnect."""
        if not self._done:
            self._disconnected.set()
