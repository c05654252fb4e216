"""The OpenAPI spec, told true: every status code a route answers, each with
its body, and the request schemas' constraints.

FastAPI's own spec documents 200 and a 422 this server never sends (its
validation errors are 400s). ``install_openapi`` replaces it with one that
adds, to each operation, what the code around the routes answers:

- 400 for a request whose body, path or query failed validation (the codes a
  schema-valid request may still get are listed in its description);
- 401 and 429 on routes behind ``authenticate`` (a key, rate limits), 403 on
  admin routes;
- 404 on routes with a path parameter; 413 (BodySizeMiddleware) everywhere;
  415 on routes that read a JSON body (``require_json``); 503 everywhere but
  the probes (TrafficMiddleware's drain, a model loading, the store away);

and what a route declares itself in its decorator (``responses=``, built
with ``error_responses``). Limits that are settings of this server (batch
sizes) are filled in from them. The security schemes appear while the server
has API keys, so the spec a client reads says whether it needs one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from modelbench.server.auth import authenticate, require_admin
from modelbench.server.content_type import require_json
from modelbench.server.protocol import ErrorResponse
from modelbench.server.protocol_fields import CONTEXTUAL_CODES
from modelbench.server.traffic import ALWAYS_OPEN

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}

DESCRIPTIONS = {
    400: "The request is invalid: the error names the field (`param`) and what is wrong. "
    "A request this schema allows may still be refused by the model it names, with one of "
    "these codes: " + "; ".join(f"`{code}`: {why}" for code, why in CONTEXTUAL_CODES.items()) + ".",
    401: "The server has API keys and the request has none, or a wrong one: send "
    "`Authorization: Bearer <key>` (or `X-API-Key`).",
    403: "The key may not do this (admin routes need an admin key), or the route is off.",
    404: "Not found: the model or the resource the request names; the error lists what exists.",
    409: "The request conflicts with the server's state (the error says which).",
    413: "The body is larger than the server's limit (MODELBENCH_MAX_BODY_BYTES).",
    415: "The body is not sent as JSON: send `Content-Type: application/json`.",
    429: "Too many requests: a rate limit, or the model's queue is full; retry after "
    "`Retry-After` seconds.",
    502: "An upstream serving the model failed (models served by upstreams only).",
    503: "Not ready: the server is draining, the model is loading, or the store is "
    "unavailable; retry (after `Retry-After` seconds when given).",
    504: "No upstream answered in time (models served by upstreams only), or a tensor "
    "model's request waited in its queue past its timeout_s.",
}

# The models server-sent events carry (``streamed``); build_spec adds their
# schemas to the components the events' data refer to.
STREAM_MODELS: set[type[BaseModel]] = set()

# Routes whose bodies FastAPI cannot see, because they read or write them
# themselves (routes/batch.py): what they take and send. A batch's items may
# be anything: a malformed one fails alone, in the batch's results.


def batch_body(app: FastAPI) -> dict[str, Any]:
    requests = {"type": "array", "minItems": 1, "maxItems": app.state.settings.max_batch_jobs}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {
                                "requests": requests,
                                "metadata": {"type": ["object", "null"]},
                                "priority": {
                                    "type": ["integer", "null"],
                                    "minimum": -(2**31),
                                    "maximum": 2**31 - 1,
                                },
                            },
                            "required": ["requests"],
                        },
                        requests,
                    ]
                }
            },
            "application/jsonl": {"schema": {"type": "string", "pattern": "\\S"}},
        },
    }


OWN_BODIES: dict[tuple[str, str], Callable[[FastAPI], dict[str, Any]]] = {
    ("post", "/v1/batch"): batch_body
}
OWN_RESULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/v1/batch/{batch_id}/results"): {"application/jsonl": {"schema": {"type": "string"}}},
}
# Array limits that are this server's settings: (method, path) -> (the body's
# field, the limit for an app). Routes add theirs with ``array_limit``.
ARRAY_LIMITS: dict[tuple[str, str], tuple[str, Callable[[FastAPI], int]]] = {}


def array_limit(method: str, path: str, field: str, limit: Callable[[FastAPI], int]) -> None:
    """State in the spec that the body's ``field`` holds at most ``limit(app)`` items."""
    ARRAY_LIMITS[(method.lower(), path)] = (field, limit)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route decorator's ``responses=``: these status codes, each with the error body."""
    return {code: {"model": ErrorResponse, "description": DESCRIPTIONS[code]} for code in codes}


def streamed(
    model: type[BaseModel], event: type[BaseModel] | dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers ``model`` as JSON, or with
    ``"stream": true`` as server-sent events: each event's data is ``event``
    (a model, or a schema; any JSON object when not given) as JSON, an error
    body, or ``[DONE]``."""
    if event is None:
        event_schema: dict[str, Any] = {"type": "object"}
    elif isinstance(event, dict):
        event_schema = event
    else:
        STREAM_MODELS.add(event)
        event_schema = {"$ref": f"#/components/schemas/{event.__name__}"}
    data = {
        "type": "string",
        "if": {"const": "[DONE]"},
        "then": {},
        "else": {
            "contentMediaType": "application/json",
            "contentSchema": {"anyOf": [event_schema, ERROR_REF]},
        },
    }
    one_event = {
        "type": "object",
        "properties": {"data": data, "event": {"type": "string"}},
        "required": ["data"],
    }
    return {200: {"model": model, "content": {"text/event-stream": {"schema": one_event}}}}


def _add_component(components: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(model.__name__, schema)


def api_routes(app: FastAPI) -> Iterator[Any]:
    """The app's routes in the spec, as they are once included (with their
    router's prefix and dependencies)."""
    # FastAPI 0.165 keeps included routers as they are and resolves their
    # routes through contexts; older versions copied them into app.routes.
    contexts = getattr(routing, "iter_route_contexts", lambda routes: routes)(app.routes)
    for route in contexts:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute) and route.include_in_schema:
            yield route


def _dependencies(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependencies(sub)


def _error(code: int) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS[code],
        "content": {"application/json": {"schema": ERROR_REF}},
    }


def _route_errors(route: Any) -> set[int]:
    """The status codes the code around ``route`` can answer it with."""
    calls = set(_dependencies(route.dependant))
    dependant = route.dependant
    codes = {413}
    if route.path not in ALWAYS_OPEN:
        codes.add(503)
    if route.body_field is not None or dependant.query_params or dependant.path_params:
        codes.add(400)
    if dependant.path_params:
        codes.add(404)
    if require_json in calls:
        codes.add(415)
    if authenticate in calls:
        codes |= {401, 429}
    if require_admin in calls:
        codes.add(403)
    return codes


def _put_limit(operation: dict[str, Any], spec: dict[str, Any], field: str, limit: int) -> None:
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = body.get("schema", {})
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    prop = schema.get("properties", {}).get(field)
    if prop is not None:
        prop["maxItems"] = limit


def build_spec(app: FastAPI) -> dict[str, Any]:
    """The spec without the security schemes (those follow the keys file)."""
    spec = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [ErrorResponse]
    for model in [*models, *sorted(STREAM_MODELS, key=lambda m: m.__name__)]:
        _add_component(components, model)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for route in api_routes(app):
        for method in route.methods:
            key = (method.lower(), route.path_format)
            operation = spec["paths"][route.path_format][key[0]]
            responses = operation["responses"]
            responses.pop("422", None)
            for code in sorted(_route_errors(route)):
                responses.setdefault(str(code), _error(code))
            if key in OWN_BODIES:
                operation["requestBody"] = OWN_BODIES[key](app)
                responses.setdefault("400", _error(400))
            if key in OWN_RESULTS:
                responses["200"]["content"] = copy.deepcopy(OWN_RESULTS[key])
            if key in ARRAY_LIMITS:
                field, limit = ARRAY_LIMITS[key]
                _put_limit(operation, spec, field, limit(app))
    ready = spec["paths"].get("/ready", {}).get("get")
    if ready is not None:  # the probe answers its own body, ready or not
        status = {"type": "object", "properties": {"status": {"type": "string"}}}
        ready["responses"]["200"]["content"]["application/json"]["schema"] = status
        ready["responses"]["503"] = {
            "description": "Not ready: loading, failed, draining; the body says which models",
            "content": {"application/json": {"schema": status}},
        }
    return spec


def with_security(spec: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """``spec`` with the API-key schemes on every keyed operation."""
    spec = copy.deepcopy(spec)
    spec["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for route in api_routes(app):
        if authenticate in set(_dependencies(route.dependant)):
            for method in route.methods:
                operation = spec["paths"][route.path_format][method.lower()]
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
    return spec


def install_openapi(app: FastAPI) -> None:
    """Serve the told-true spec at /openapi.json (and to /docs)."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not built:
            built.update(build_spec(app))
        from modelbench.server.auth import auth_required  # auth imports routes' helpers

        if auth_required(app.state):
            return with_security(built, app)
        return built

    app.openapi = openapi  # type: ignore[method-assign]
