"""The dependencies routes share: the model registry, the model version a
request resolves to (which the request log learns), and telling the request
log what was asked."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel

from modelbench.server.recorder import current_record
from modelbench.server.registry import ModelHandle, ModelRegistry


def registry_of(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_registry(request: Request) -> ModelRegistry:
    """The registry, as a dependency: async, since FastAPI runs a plain
    function's dependency on its thread pool (a thread hop per request)."""
    return registry_of(request)


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def resolve(request: Request, model: str, task: str = "generate") -> ModelHandle:
    """The version serving ``model`` for ``task``; the request log learns it."""
    handle = registry_of(request).resolve(model, task)
    request.scope.setdefault("state", {})["model"] = handle.id
    record = current_record.get()
    if record is not None:
        record.routed(handle.name, handle.version)
    return handle


def describe_request(
    body: BaseModel, *, prompt: object = None, messages: list | None = None
) -> None:
    """Tell the request log what was asked: the prompt or messages, and the
    other fields as the parameters."""
    record = current_record.get()
    if record is None:
        return
    parameters = body.model_dump(exclude={"model", "prompt", "messages"}, exclude_none=True)
    record.describe(
        prompt=prompt,
        messages=messages,
        parameters=parameters,
        stream=bool(getattr(body, "stream", False)),
    )
