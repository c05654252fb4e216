"""Routes, one file per resource, and what they share: the API error, the
engine dependency, the model check, and starting a generation."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from pydantic import BaseModel

from modelbench.async_engine import AsyncEngine
from modelbench.outputs import RequestOutput
from modelbench.sampling_params import SamplingParams


class APIError(Exception):
    """An error the client gets as OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type


def invalid_value(exc: ValueError, fields: set[str], rename: dict[str, str] | None = None) -> APIError:
    """A 400 for a ValueError whose message starts with the offending field's
    name, as SamplingParams' and the engine's messages do."""
    message = str(exc)
    first = message.split(" ", 1)[0].rstrip(":")
    rename = rename or {}
    param = rename.get(first, first) if first in fields else None
    return APIError(400, message, param=param)


def get_engine(request: Request) -> AsyncEngine:
    """The loaded engine; 503 while it is still loading (or failed to load)."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise APIError(503, "the model is not loaded yet; retry when /ready says so",
                       code="model_not_ready", type="service_unavailable")
    return engine


def check_model(request: Request, model: str) -> str:
    """The served model's name; 404 naming the available ones when ``model`` is not it."""
    available = [request.app.state.settings.served_model_name]
    if model not in available:
        raise APIError(
            404, f"The model {model!r} does not exist. Available models: {', '.join(available)}",
            param="model", code="model_not_found",
        )
    return model


def build_params(make: object, fields: set[str]) -> SamplingParams:
    """Call ``make()`` (a request's sampling_params) and turn its ValueError into a 400."""
    try:
        params = make()  # type: ignore[operator]
    except ValueError as exc:
        raise invalid_value(exc, fields) from exc
    if params.n != 1:
        raise APIError(400, f"n must be 1 (several choices are not supported yet), got {params.n}",
                       param="n")
    return params


async def start_generation(
    engine: AsyncEngine,
    prompt: str | list[int],
    params: SamplingParams,
    request_id: str,
    prompt_param: str,
) -> AsyncIterator[RequestOutput]:
    """Submit the request and wait for its first delta, so that bad input (a
    prompt too long, a token outside the vocabulary) is a 400 before any
    response starts. Returns all deltas, the first included; closing the
    iterator aborts the request in the engine."""
    gen = engine.generate(prompt, params, request_id)
    try:
        first = await gen.__anext__()
    except ValueError as exc:
        raise invalid_value(exc, {"prompt"}, {"prompt": prompt_param}) from exc

    async def deltas() -> AsyncIterator[RequestOutput]:
        try:
            yield first
            async for out in gen:
                yield out
        finally:
            await gen.aclose()  # aborts the request unless it finished

    return deltas()


async def collect(deltas: AsyncIterator[RequestOutput]) -> tuple[str, int, list, RequestOutput]:
    """A non-streamed response's material: the whole text, the number of
    generated tokens, their logprobs, and the last (finished) output."""
    text, num_generated, positions, last = "", 0, [], None
    async for out in deltas:
        delta = out.outputs[0]
        text += delta.text
        num_generated += len(delta.token_ids)
        positions.extend(delta.logprobs or [])
        last = out
    assert last is not None and last.finished, "the engine ended a stream without a final output"
    return text, num_generated, positions, last


def sse(event: BaseModel | str) -> str:
    """One server-sent event."""
    data = event if isinstance(event, str) else event.model_dump_json()
    return f"data: {data}\n\n"


SSE_DONE = sse("[DONE]")
