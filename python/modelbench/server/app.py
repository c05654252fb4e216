"""create_app(settings): the FastAPI app over one AsyncEngine.

The engine loads in a background thread once the server starts, so that
/health answers at once and /ready turns 200 when the model is in memory.
Every error reaches the client as OpenAI's ``{"error": {...}}`` body.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbench.async_engine import AsyncEngine
from modelbench.server.protocol import ErrorInfo, ErrorResponse
from modelbench.server.routes import APIError, chat, completions, health, models
from modelbench.server.settings import ServerSettings

logger = logging.getLogger("modelbench.server")

REQUEST_ID_HEADER = "x-request-id"
_UNION_BRANCHES = {"str", "int", "float", "bool", "list[int]", "list[str]"}


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


def error_response(status_code: int, message: str, param: str | None = None,
                   code: str | None = None, type: str = "invalid_request_error") -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status_code)


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc.status_code, exc.message, exc.param, exc.code, exc.type)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Pydantic's 422 becomes OpenAI's 400 naming the first bad field."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return error_response(400, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return error_response(400, f"the request body is not valid JSON: {first.get('msg')}",
                              param="body")
    # Drop "body", and the branch names a union (str | list[int]) adds to loc.
    loc = [str(part) for part in first.get("loc", ())
           if part != "body" and not (isinstance(part, str) and part in _UNION_BRANCHES)]
    param = loc[0] if loc else None
    where = ".".join(loc) if loc else "body"
    message = f"{where}: {first.get('msg')}"
    if "input" in first and first.get("type") != "missing":
        message += f" (got {first['input']!r})"[:300]
    return error_response(400, message, param=param)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), type=kind)


async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}", type="internal_error")


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = None
        app.state.load_error = None

        async def load() -> None:
            try:
                app.state.engine = await asyncio.to_thread(AsyncEngine, settings.engine_args())
                logger.info("serving %s as %r", settings.model, settings.served_model_name)
            except Exception as exc:  # /ready reports it; the process stays up for /health
                logger.exception("loading the model failed")
                app.state.load_error = f"{type(exc).__name__}: {exc}"

        loading = asyncio.create_task(load())
        try:
            yield
        finally:
            await asyncio.shield(loading)  # a thread cannot be cancelled: let it finish
            engine, app.state.engine = app.state.engine, None
            if engine is not None:
                await asyncio.to_thread(engine.shutdown)

    app = FastAPI(title="modelbench", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = None
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    for module in (completions, chat, models, health):
        app.include_router(module.router)
    return app
