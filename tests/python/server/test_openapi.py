"""The OpenAPI spec tells the truth (issue 20): every status code a route can
answer, each with OpenAI's error body and no 422 (validation errors are
400s); the engine's ranges on the request fields, so that a value at a
schema's bound is one the engine takes and a value past it is refused; the
limits that are settings; the event streams; and the API-key schemes while
keys exist. Read from ``create_app(settings)`` as /openapi.json serves it;
tests/python/server/test_schemathesis.py holds the running server to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from modelbench.config import Settings
from modelbench.engine.sampling_ranges import FLOAT32_MAX, MAX_LOGPROBS, MAX_N
from modelbench.server import create_app
from modelbench.server.protocol import ChatCompletionRequest, CompletionRequest
from modelbench.server.protocol_fields import CONTEXTUAL_CODES

ERROR_REF = "#/components/schemas/ErrorResponse"
PROBES = {"/health", "/ready"}
JSON_ROUTES = {
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/infer",
    "/v1/infer/batch",
    "/v1/compare",
    "/tokenize",
    "/detokenize",
    "/v1/admin/models",
}


def make_app(model_path: Path, tmp_path: Path, **settings: Any) -> FastAPI:
    return create_app(
        Settings(
            model=str(model_path),
            served_model_name="tiny-llama",
            keys_file=tmp_path / "keys.json",
            **settings,
        )
    )


@pytest.fixture(scope="module")
def app(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return make_app(tiny_llama_path, tmp_path_factory.mktemp("openapi"))


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_error_is_documented_with_the_openai_body_and_none_is_a_422(app: FastAPI) -> None:
    spec = app.openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert set(spec["components"]["schemas"]["ErrorResponse"]["properties"]) == {"error"}
    for method, path, op in operations(spec):
        responses = op["responses"]
        assert "422" not in responses, (method, path)
        for code, response in responses.items():
            if int(code) < 400 or (path == "/ready" and code == "503"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, code)


def test_each_route_documents_what_the_code_around_it_answers(app: FastAPI) -> None:
    spec = app.openapi()
    seen = set()
    for method, path, op in operations(spec):
        codes = set(op["responses"])
        seen.add(path)
        assert "413" in codes, (method, path)  # BodySizeMiddleware, on every request
        assert ("503" in codes) == (path not in PROBES or path == "/ready"), (method, path)
        if path in JSON_ROUTES and method == "post":
            assert {"400", "415"} <= codes, (method, path)
        if "{" in path:
            assert {"400", "404"} <= codes, (method, path)
        keyed = path not in PROBES | {"/version"}
        assert ({"401", "429"} <= codes) == keyed, (method, path)
        if path.startswith("/v1/admin"):
            assert "403" in codes, (method, path)
    assert {"502", "504"} <= set(spec["paths"]["/v1/completions"]["post"]["responses"])
    assert {"403"} <= set(spec["paths"]["/v1/requests"]["get"]["responses"])
    assert "400" in spec["paths"]["/v1/batch"]["post"]["responses"]
    assert JSON_ROUTES <= seen


def test_the_400_lists_the_codes_a_schema_valid_request_may_still_get(app: FastAPI) -> None:
    described = app.openapi()["paths"]["/v1/completions"]["post"]["responses"]["400"]
    for code in CONTEXTUAL_CODES:
        assert f"`{code}`" in described["description"]


def properties(app: FastAPI, model: str) -> dict[str, dict]:
    return app.openapi()["components"]["schemas"][model]["properties"]


def branch(schema: dict) -> dict:
    """The non-null branch of an optional field's schema ({} for a union of several)."""
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return options[0] if len(options) == 1 else {}


def test_request_schemas_carry_the_engine_ranges_and_strict_types(app: FastAPI) -> None:
    fields = {name: branch(s) for name, s in properties(app, "CompletionRequest").items()}
    assert fields["temperature"].items() >= {"minimum": 0, "maximum": FLOAT32_MAX}.items()
    assert fields["top_p"].items() >= {"exclusiveMinimum": 0, "maximum": 1}.items()
    assert fields["n"].items() >= {"type": "integer", "minimum": 1, "maximum": MAX_N}.items()
    assert fields["max_tokens"].items() >= {"type": "integer", "minimum": 1}.items()
    assert fields["logprobs"]["maximum"] == MAX_LOGPROBS
    assert fields["seed"]["maximum"] == 2**53 - 1
    assert fields["stream"] == {"type": "boolean"}
    assert fields["logit_bias"] == {"type": "object", "maxProperties": 0}
    chat = properties(app, "ChatCompletionRequest")
    assert chat["messages"]["minItems"] == 1
    role = properties(app, "ChatMessage")["role"]
    assert role["enum"] == ["system", "user", "assistant", "tool"]
    assert branch(chat["tools"]) == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Tool"},
    }
    assert branch(chat["functions"]) == {"type": "array", "maxItems": 0}


def bounds(schema: dict) -> list[tuple[Any, bool]]:
    """Values at each bound of a numeric schema (True: allowed) and past it (False)."""
    kind = schema["type"]
    cases: list[tuple[Any, bool]] = []
    if "minimum" in schema:
        cases += [(schema["minimum"], True), (schema["minimum"] - 1, False)]
    if "exclusiveMinimum" in schema:
        tiny = 1 if kind == "integer" else 5e-324
        cases += [(schema["exclusiveMinimum"] + tiny, True), (schema["exclusiveMinimum"], False)]
    if "maximum" in schema:
        over = schema["maximum"] * 2 if kind == "number" else schema["maximum"] + 1
        cases += [(schema["maximum"], True), (over, False)]
    return cases


@pytest.mark.parametrize("model", [CompletionRequest, ChatCompletionRequest])
def test_a_value_at_a_bound_is_one_the_engine_takes_and_one_past_it_is_refused(
    app: FastAPI, model: type
) -> None:
    base: dict[str, Any] = {"model": "m"}
    if model is CompletionRequest:
        base["prompt"] = "a"
    else:
        base["messages"] = [{"role": "user", "content": "a"}]
    checked = 0
    for name, schema in properties(app, model.__name__).items():
        numeric = branch(schema)
        if numeric.get("type") not in ("integer", "number") or name == "best_of":
            continue  # best_of must equal n: a conflict, not a range
        for value, allowed in bounds(numeric):
            body = {**base, name: value}
            if name == "top_logprobs":
                body["logprobs"] = True
            if not allowed:
                with pytest.raises(ValidationError):
                    model.model_validate(body)
                continue
            request = model.model_validate(body)
            request.sampling_params(2**31 - 1, {})  # the engine's own checks (C++ included)
            checked += 1
    assert checked >= 20


def test_limits_that_are_settings_are_in_the_spec(tiny_llama_path: Path, tmp_path: Path) -> None:
    spec = make_app(tiny_llama_path, tmp_path, infer_max_batch=7, max_batch_jobs=11).openapi()
    requests = spec["components"]["schemas"]["InferBatchRequest"]["properties"]["requests"]
    assert requests.items() >= {"type": "array", "minItems": 1, "maxItems": 7}.items()
    batch = spec["paths"]["/v1/batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["anyOf"][1]["maxItems"] == 11
    assert "application/jsonl" in batch
    compare = spec["components"]["schemas"]["CompareRequest"]["properties"]["models"]
    assert compare["maxItems"] == 8  # GatewayOptions' max_compare_models


def test_streams_and_their_events_are_documented(app: FastAPI) -> None:
    spec = app.openapi()
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/responses", "/v1/compare"):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert "application/json" in content
        event = content["text/event-stream"]["schema"]
        assert event["required"] == ["data"]
        data = event["properties"]["data"]
        assert data["if"] == {"const": "[DONE]"}
        assert data["else"]["contentMediaType"] == "application/json"
    chunk = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    of_chunk = chunk["text/event-stream"]["schema"]["properties"]["data"]["else"]
    assert {"$ref": "#/components/schemas/ChatCompletionChunk"} in of_chunk["contentSchema"][
        "anyOf"
    ]
    assert "ChatCompletionChunk" in spec["components"]["schemas"]
    results = spec["paths"]["/v1/batch/{batch_id}/results"]["get"]["responses"]["200"]
    assert list(results["content"]) == ["application/jsonl"]


def test_the_api_key_schemes_appear_while_keys_exist(tiny_llama_path: Path, tmp_path: Path) -> None:
    app = make_app(tiny_llama_path, tmp_path)
    spec = app.openapi()
    assert "securitySchemes" not in spec["components"]
    assert all("security" not in op for _, _, op in operations(spec))
    key, _ = app.state.keys.create("someone")
    spec = app.openapi()
    assert spec["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for _, path, op in operations(spec):
        keyed = path not in PROBES | {"/version"}
        assert ("security" in op) == keyed, path
    app.state.keys.revoke(key.id)
    assert "securitySchemes" not in app.openapi()["components"]
