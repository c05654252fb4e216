"""BodySizeMiddleware: a request body larger than ``max_body_bytes`` is
refused with 413 before the app reads it: at once when Content-Length says
so, or as soon as a chunked body (read here first, then handed on) grows
past the limit. Plain ASGI, so streaming responses are untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbench.server.errors import error_response


class BodySizeMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def refusal(self) -> object:
        return error_response(
            413,
            f"the request body is larger than {self.max_body_bytes} bytes, the limit "
            "(MODELBENCH_MAX_BODY_BYTES); send less, or split a batch",
            param="body",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self.refusal()(scope, receive, send)  # type: ignore[operator]
            return
        if length is not None:
            await self.app(scope, receive, send)  # the server holds a body to its Content-Length
            return
        # Chunked: read it here, up to the limit, then hand it on whole.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body.extend(message.get("body", b""))
            if len(body) > self.max_body_bytes:
                await self.refusal()(scope, receive, send)  # type: ignore[operator]
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
