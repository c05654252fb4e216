"""The JSON routes' Content-Type check. Without it FastAPI reads a body sent
with no Content-Type, or another one, as bytes and answers with pydantic's
"Input should be a valid dictionary", which does not say what to fix. A route
that reads a JSON body depends on ``require_json``; a request without
``Content-Type: application/json`` (or a ``+json`` type) is then a 415 naming
the header. It runs after authentication, before the body is validated."""

from __future__ import annotations

from fastapi import Depends, Request

from modelbench.server.errors import APIError

HEADER = "Content-Type"


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def require_json(request: Request) -> None:
    content_type = request.headers.get(HEADER)
    if content_type is None:
        got = "the request has no Content-Type header"
    elif is_json(content_type):
        return
    else:
        got = f"its Content-Type is {content_type[:100]!r}"
    raise APIError(
        415,
        f"{request.url.path} reads a JSON body, but {got}: send the body as JSON with the "
        f"header '{HEADER}: application/json'",
        param=HEADER,
        code="unsupported_media_type",
    )


JSON_BODY = [Depends(require_json)]  # a JSON route's ``dependencies=``
