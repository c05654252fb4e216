"""Request and response bodies of modelbench's task API, ``POST /v1/infer``
and ``POST /v1/infer/batch``. Only the shapes live here; routes/infer.py
fills them in and models/tasks.py does the work."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelbench.server.protocol import ErrorInfo
from modelbench.tasks.adapters import InferTask, TaskInputError


class InferRequest(BaseModel):
    """One task on one text.

    ``text`` (or its alias ``prompt``) is the input. ``model`` is
    ``"name"`` or ``"name:version"``; omitted, the first loaded model that
    serves the task answers. ``parameters`` depend on the task (see
    modelbench.tasks.adapters). ``priority`` orders it in the engine's
    queue against other requests: lower first, as vLLM's."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    prompt: str | None = None
    task: InferTask = "generate"
    model: str | None = Field(default=None, min_length=1)
    parameters: dict[str, Any] | None = None  # null is the task's defaults
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)  # lower runs first, as vLLM

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

    model_config = ConfigDict(extra="forbid")

    requests: list[Any]


class InferBatchResponse(BaseModel):
    """The items' answers, in the order of the request."""

    request_id: str
    timestamp: str
    latency_ms: float
    num_succeeded: int
    num_failed: int
    results: list[InferResponse]
