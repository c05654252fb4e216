"""schemathesis hooks for fuzzing a modelbench server (scripts/fuzz_api.py and
tests/python/server/test_schemathesis.py load them with
``SCHEMATHESIS_HOOKS=fuzz_hooks`` and scripts/ on PYTHONPATH).

What the spec cannot say, told to schemathesis here:

- Which models exist. A generated model name is almost never served, and
  its 404 comes before anything else the request would exercise, so most
  generated bodies name the served model (``MODELBENCH_FUZZ_MODEL``); one in
  ten keeps its generated name. Only string values are replaced: a body that
  is negative because of its ``model`` (a number, a missing one) stays so.
- Which 400s a schema-valid request may get: those whose cause is the model
  (its context length, vocabulary, chat template, tasks) or two fields
  together. The server gives each a code from ``CONTEXTUAL_CODES``, which the
  spec's 400 lists; a "schema-valid request rejected" failure whose response
  carries one of them is dropped (schemathesis counts what it drops; with
  ``MODELBENCH_FUZZ_DROPPED`` set, each is written there as a JSON line with
  its operation and code). Every other failure of every check stands.
- That upstreams it registers answer nowhere: a request routed to one gets
  503 ``upstreams_unavailable`` (dropped, counted as above), as it should.
- That loading a model is expensive. With ``MODELBENCH_FUZZ_LOAD_PATH``, an
  admin load (``POST /v1/admin/models``) whose string ``path`` is missing or
  null gets that path instead of the default model's: a fuzzed load is then
  checked whole (fields, path, memory) and refused, never read from disk.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import schemathesis
from schemathesis.core.failures import ServerError
from schemathesis.openapi.checks import RejectedPositiveData

from modelbench.server.protocol_fields import CONTEXTUAL_CODES

MODEL = os.environ.get("MODELBENCH_FUZZ_MODEL", "")
LOAD_PATH = os.environ.get("MODELBENCH_FUZZ_LOAD_PATH", "")


def _keeps_generated_name(body: dict[str, Any]) -> bool:
    digest = zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode())
    return digest % 10 == 0


def _is_admin_load(context: Any) -> bool:
    operation = getattr(context, "operation", None)
    return (
        operation is not None
        and operation.method.upper() == "POST"
        and operation.path == "/v1/admin/models"
    )


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    if LOAD_PATH and _is_admin_load(context) and body.get("path") is None:
        return {**body, "path": LOAD_PATH}
    if not MODEL or _keeps_generated_name(body):
        return body
    if isinstance(body.get("model"), str):
        body = {**body, "model": MODEL}
    models = body.get("models")
    if isinstance(models, list) and models and all(isinstance(m, str) for m in models):
        body = {**body, "models": [MODEL] * len(models)}
    return body


def error_code(response: Any) -> str | None:
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def drop(case: Any, code: str) -> bool:
    dropped = os.environ.get("MODELBENCH_FUZZ_DROPPED")
    if dropped:
        with open(dropped, "a") as out:
            out.write(json.dumps({"operation": case.operation.label, "code": code}) + "\n")
    return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep the failure, unless it is a schema-valid request refused with a
    400 that names a contextual cause, or a 503 from upstreams that the
    fuzzer itself registered (POST /v1/admin/upstreams with a generated URL:
    nothing answers there, and 503 ``upstreams_unavailable`` is the answer
    a gateway owes its client then)."""
    code = error_code(response)
    if isinstance(failure, RejectedPositiveData) and response.status_code == 400:
        if code in CONTEXTUAL_CODES:
            return drop(case, code)
    if isinstance(failure, ServerError) and response.status_code == 503:
        if code == "upstreams_unavailable":
            return drop(case, code)
    return True
