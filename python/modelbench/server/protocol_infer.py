"""Request and response bodies of modelbench's task API, ``POST /v1/infer``
and ``POST /v1/infer/batch``. Only the shapes live here; routes/infer.py
fills them in and models/tasks.py does the work."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from modelbench.engine.sampling_ranges import Int32
from modelbench.server.protocol import ErrorInfo
from modelbench.server.protocol_fields import STRICT_REQUEST, only
from modelbench.tasks.adapters import (
    ClassifyParameters,
    GenerationParameters,
    InferTask,
    TaskInputError,
)

# input_text() words the errors; the schema states the same: a text with
# some non-space in it, given as text or as prompt (null is not given).
InputText = Annotated[
    str | None,
    only({"anyOf": [{"type": "string", "minLength": 1, "pattern": "\\S"}, {"type": "null"}]}),
]
NO_PARAMETERS = {"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]}


def _parameters_by_task(schema: dict[str, Any]) -> None:
    """The request's schema: text or prompt, one of them; and each task's
    parameters (parse_parameters checks them when the request runs)."""

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        # Inlined where it is used: the request's own schema has no $defs of its own.
        inline = model.model_json_schema()
        defs = inline.pop("$defs", {})

        def resolve(node: Any) -> Any:
            if isinstance(node, dict):
                target = node.get("$ref", "")
                if target.startswith("#/$defs/"):
                    rest = {k: v for k, v in node.items() if k != "$ref"}
                    return resolve({**defs[target.removeprefix("#/$defs/")], **rest})
                return {k: resolve(v) for k, v in node.items()}
            if isinstance(node, list):
                return [resolve(v) for v in node]
            return node

        resolved: dict[str, Any] = resolve(inline)
        return resolved

    def task(names: list[str], parameters: dict[str, Any]) -> dict[str, Any]:
        return {"properties": {"task": {"enum": names}, "parameters": parameters}}

    schema["oneOf"] = [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("text", "prompt")
    ]
    schema["anyOf"] = [
        {"properties": {"parameters": {"anyOf": [ref(GenerationParameters), {"type": "null"}]}}}
        | {"not": {"required": ["task"]}},
        task(["generate", "summarize"], {"anyOf": [ref(GenerationParameters), {"type": "null"}]}),
        task(["sentiment", "embed"], NO_PARAMETERS),
        task(["classify"], ref(ClassifyParameters)) | {"required": ["task", "parameters"]},
    ]


class InferRequest(BaseModel):
    """One task on one text.

    ``text`` (or its alias ``prompt``) is the input. ``model`` is
    ``"name"`` or ``"name:version"``; omitted, the first loaded model that
    serves the task answers. ``parameters`` depend on the task (see
    modelbench.tasks.adapters). ``priority`` orders it in the engine's
    queue against other requests: lower first, as vLLM's."""

    model_config = STRICT_REQUEST | {"json_schema_extra": _parameters_by_task}

    text: InputText = None
    prompt: InputText = None
    task: InferTask = "generate"
    model: str | None = Field(default=None, min_length=1)
    parameters: dict[str, Any] | None = None  # null is the task's defaults
    priority: Int32 = 0  # lower runs first, as vLLM

    def input_text(self) -> str:
        """The text to work on; TaskInputError when it is missing, empty or given twice."""
        if self.text is not None and self.prompt is not None:
            raise TaskInputError("send the input as text or as prompt, not both", "text")
        text = self.text if self.text is not None else self.prompt
        if text is None:
            raise TaskInputError(
                "text is required: the input to run the task on "
                "(prompt is accepted as another name for it)",
                "text",
            )
        if not text.strip():
            raise TaskInputError("text must not be empty", "text")
        return text


class InferResponse(BaseModel):
    """One task's answer, or (in a batch) its error.

    ``result`` is text for generate and summarize, and
    ``{"label", "scores"}`` for sentiment and classify. ``model_used`` is the
    ``name:version`` that served it; ``request_id`` the X-Request-ID (in a
    batch, with ``-<index>`` appended); ``timestamp`` when the request
    arrived (ISO 8601, UTC); ``latency_ms`` the time the server spent on it."""

    success: bool
    result: str | dict[str, Any] | None = None
    model_used: str | None = None
    latency_ms: float
    request_id: str
    timestamp: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    status_code: int = 200  # in a batch, the status this item would have had alone
    error: ErrorInfo | None = None


class InferBatchRequest(BaseModel):
    """Tasks to run concurrently. Each item is validated on its own, so a
    bad one fails alone while the others run."""

    model_config = STRICT_REQUEST

    # Any items: a malformed one fails alone, in the response. The limit is
    # the server's (MODELBENCH_INFER_MAX_BATCH, in the spec's maxItems).
    requests: Annotated[list[Any], only({"type": "array", "minItems": 1})]


class InferBatchResponse(BaseModel):
    """The items' answers, in the order of the request."""

    request_id: str
    timestamp: str
    latency_ms: float
    num_succeeded: int
    num_failed: int
    results: list[InferResponse]
