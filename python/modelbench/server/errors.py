"""The API error and how every error reaches the client: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` body with a 4xx status
that names the field and the problem. Nothing a client sends yields a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, routing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from modelbench.server.protocol import ErrorInfo, ErrorResponse
from modelbench.server.protocol_fields import (
    CONFLICTING_FIELDS,
    CONTEXT_LENGTH_EXCEEDED,
    INVALID_GUIDED_CONSTRAINT,
    UNSUPPORTED_FIELDS,
    ContextTooLong,
)

logger = logging.getLogger("modelbench.server")

_LOCATIONS = {"body", "query", "path", "header", "cookie"}  # where FastAPI found the field
_UNION_BRANCHES = {"str", "int", "float", "bool", "list[int]", "list[str]", "list[list[int]]"}
# Pydantic's error types for a value of the wrong JSON type, and what to send.
_WRONG_TYPE = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
}
# Pydantic's error types for a value out of range, as the engine words them.
_BOUNDS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}
# Validation errors raised by our own validators whose type is the 400's code.
# Validation errors whose type is a contextual code (a tool's parameter schema that is no
# JSON Schema is invalid_guided_constraint, as a response_format's would be).
_CODED_ERRORS = {CONFLICTING_FIELDS, INVALID_GUIDED_CONSTRAINT}


class APIError(Exception):
    """An error the client gets as OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers


def invalid_value(exc: ValueError, rename: dict[str, str] | None = None) -> APIError:
    """A 400 for a ValueError raised by the engine's checks. The field is the
    one the error carries (``param``: ``InvalidParameter`` and
    ``_core.InvalidArgument`` set it where they are raised), and so is the
    code when there is one (``conflicting_fields``, ...); ``rename`` maps an
    engine field to the request field the client sent it as, and the message
    is reworded to name that one."""
    message = str(exc)
    param = getattr(exc, "param", None) or None
    if param is not None and rename and param in rename:
        if message.startswith(param):
            message = rename[param] + message[len(param) :]
        param = rename[param]
    return APIError(400, message, param=param, code=getattr(exc, "code", None))


def context_too_long(exc: ContextTooLong, num_prompt_tokens: int, max_model_len: int) -> APIError:
    """More tokens asked for than the prompt leaves of the context: a 400
    with the numbers, as vLLM's."""
    return APIError(
        400,
        f"{exc.param} is {exc.asked}, but the prompt takes {num_prompt_tokens} of the "
        f"model's {max_model_len} tokens, which leaves {exc.room}; lower {exc.param} or "
        "shorten the prompt",
        param=exc.param,
        code=CONTEXT_LENGTH_EXCEEDED,
    )


def error_response(
    status_code: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    type: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc.status_code, exc.message, exc.param, exc.code, exc.type, exc.headers)


def _field_path(loc: tuple) -> list[str]:
    """The field's path in ``loc``, without where it was ("body", first) and
    without the branch names a union (``str | list[int]``) adds. A field may
    itself be called "path" (an admin load's)."""
    return [
        str(part)
        for i, part in enumerate(loc)
        if not (i == 0 and part in _LOCATIONS) and not (isinstance(part, str) and _is_branch(part))
    ]


def _is_branch(part: str) -> bool:
    return part in _UNION_BRANCHES or "[" in part or part.startswith("constrained-")


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Pydantic's 422 becomes OpenAI's 400 naming the first bad field (for a
    union, the branch whose error goes deepest: ``prompt.1``, not "prompt is
    not a string"); a field the request does not declare is refused by name."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return error_response(400, "invalid request")
    if errors[0].get("type") == "json_invalid":
        return error_response(
            400, f"the request body is not valid JSON: {errors[0].get('msg')}", param="body"
        )
    field = _field_path(errors[0].get("loc", ()))[:1]
    first = max(
        (e for e in errors if _field_path(e.get("loc", ()))[:1] == field),
        key=lambda e: len(_field_path(e.get("loc", ()))),
    )
    loc = _field_path(first.get("loc", ()))
    param = loc[0] if loc else None
    where = ".".join(loc) if loc else "body"
    kind = first.get("type", "")
    given = first.get("input")
    if kind == "extra_forbidden":
        why = UNSUPPORTED_FIELDS.get(where) if len(loc) == 1 else None
        message = why or f"{where} is not supported: this request has no such field"
    elif kind in _WRONG_TYPE and isinstance(given, str) and kind != "string_type":
        message = (
            f"{where} must be {_WRONG_TYPE[kind]}, got the string {given!r}"[:300]
            + ": send numbers and booleans as JSON numbers and true/false, without quotes"
        )
        return error_response(400, message, param=param)
    elif kind in _BOUNDS and _BOUNDS[kind][0] in first.get("ctx", {}):
        key, op = _BOUNDS[kind]
        return error_response(
            400, f"{where} must be {op} {first['ctx'][key]}, got {given!r}"[:300], param=param
        )
    else:
        message = f"{where}: {first.get('msg')}"
    if "input" in first and kind != "missing":
        message += f" (got {given!r})"[:300]
    return error_response(400, message, param=param, code=kind if kind in _CODED_ERRORS else None)


def methods_of(app: FastAPI, path: str) -> list[str]:
    """Every method some route of ``app`` takes at ``path``."""
    # FastAPI 0.165 keeps included routers whole and resolves them through contexts.
    routes = getattr(routing, "iter_route_contexts", lambda routes: routes)(app.routes)
    methods: set[str] = set()
    for route in routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors in OpenAI's body: an unknown route (404), a
    method the route does not take (405, with Allow), a body it could not read."""
    assert isinstance(exc, HTTPException)
    headers = getattr(exc, "headers", None)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404 and exc.detail == "Not Found":
        return error_response(
            404,
            f"Not Found: there is no route {where}; GET /openapi.json lists the routes",
            code="route_not_found",
            type="not_found_error",
        )
    if exc.status_code == 405:
        # Starlette's Allow names the first route of the path; a path may have several.
        allowed = ", ".join(methods_of(request.app, request.url.path))
        return error_response(
            405,
            f"Method Not Allowed: {request.url.path} takes {allowed}, not {request.method}",
            code="method_not_allowed",
            headers={**(headers or {}), "Allow": allowed},
        )
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), type=kind, headers=headers)


async def on_store_error(request: Request, exc: Exception) -> JSONResponse:
    """The database went away under a request that needs it (batches, the
    request log): a 503 to retry, not a 500. Inference never gets here."""
    logger.error("store error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        "the store is unavailable; retry shortly",
        code="store_unavailable",
        type="service_unavailable",
        headers={"Retry-After": "5"},
    )


async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the log gets the traceback, the client the request id to quote
    and nothing of the exception (its text may hold paths, or data). This runs
    outside the request-id middleware, so the id header is set here."""
    request_id = request.scope.get("state", {}).get("request_id") or "unknown"
    logger.exception(
        "unhandled error on %s %s (request id %s)", request.method, request.url.path, request_id
    )
    return error_response(
        500,
        f"internal server error (request id {request_id}); the server's log has the details",
        code="internal_error",
        type="internal_error",
        headers={"x-request-id": request_id},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(OperationalError, on_store_error)
    app.add_exception_handler(InterfaceError, on_store_error)
    app.add_exception_handler(Exception, on_unexpected_error)
