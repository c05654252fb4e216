"""Messages of ``modelbench.v1.Inference`` to and from the HTTP routes'
bodies: each request becomes the JSON its route takes (only the fields the
caller set, so the route's defaults and checks apply), each answer the
message its route's JSON makes. A tensor travels as its shape and its
values in row order (``data`` for floats, ``int_data`` for integers), the
JSON API's nested lists."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelbench.server.grpc import inference_pb2 as pb
from modelbench.server.grpc.status import invalid_argument

# Longest a predict may wait for when the call's deadline says (PredictRequest's bound).
MAX_TIMEOUT_S = 3600.0
# GenerateRequest's optional fields that go to the route as they are.
SAMPLING_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "n",
    "min_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "priority",
)


def generate_body(request: pb.GenerateRequest) -> tuple[str, dict[str, Any]]:
    """The route (completions for a prompt, chat for messages) and its
    streamed request body."""
    body: dict[str, Any] = {"model": request.model, "stream": True}
    for name in SAMPLING_FIELDS:
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.include_usage:
        body["stream_options"] = {"include_usage": True}
    which = request.WhichOneof("input")
    if which == "prompt":
        body["prompt"] = request.prompt
        if request.HasField("logprobs"):
            body["logprobs"] = request.logprobs
        return "/v1/completions", body
    if which == "chat":
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.chat.messages]
        if request.HasField("logprobs"):
            body["logprobs"] = True
            body["top_logprobs"] = request.logprobs
        return "/v1/chat/completions", body
    raise invalid_argument("prompt", "give a prompt or chat messages")


def generate_responses(chunk: dict[str, Any]) -> list[pb.GenerateResponse]:
    """A stream chunk of the completions or chat route as responses, one per
    choice that says something (a chat's first, role-only delta says nothing),
    or one carrying the usage."""
    responses = []
    for choice in chunk.get("choices") or []:
        text = choice.get("text")
        if text is None:  # a chat chunk
            text = (choice.get("delta") or {}).get("content") or ""
        logprobs = token_logprobs(choice.get("logprobs"))
        finish_reason = choice.get("finish_reason") or ""
        if text or logprobs or finish_reason:
            responses.append(
                pb.GenerateResponse(
                    id=chunk["id"],
                    model=chunk["model"],
                    index=choice["index"],
                    text=text,
                    logprobs=logprobs,
                    finish_reason=finish_reason,
                )
            )
    if chunk.get("usage"):
        responses.append(
            pb.GenerateResponse(id=chunk["id"], model=chunk["model"], usage=usage(chunk["usage"]))
        )
    return responses


def token_logprobs(logprobs: dict[str, Any] | None) -> list[pb.TokenLogprob]:
    """A choice's logprobs in either route's shape (completions: parallel
    lists; chat: ``content``, one entry per token)."""
    if not logprobs:
        return []
    if "content" in logprobs:
        return [
            pb.TokenLogprob(
                token=entry["token"],
                logprob=entry["logprob"],
                top_logprobs=[
                    pb.TopLogprob(token=top["token"], logprob=top["logprob"])
                    for top in entry.get("top_logprobs") or []
                ],
            )
            for entry in logprobs["content"] or []
        ]
    tops = logprobs.get("top_logprobs") or []
    return [
        pb.TokenLogprob(
            token=token,
            logprob=logprob if logprob is not None else float("nan"),
            top_logprobs=[
                pb.TopLogprob(token=t, logprob=lp)
                for t, lp in ((tops[i] or {}) if i < len(tops) else {}).items()
            ],
        )
        for i, (token, logprob) in enumerate(
            zip(logprobs.get("tokens") or [], logprobs.get("token_logprobs") or [])
        )
    ]


def usage(body: dict[str, Any]) -> pb.Usage:
    details = body.get("prompt_tokens_details") or {}
    return pb.Usage(
        prompt_tokens=body.get("prompt_tokens") or 0,
        completion_tokens=body.get("completion_tokens") or 0,
        total_tokens=body.get("total_tokens") or 0,
        cached_tokens=details.get("cached_tokens") or 0,
    )


def predict_body(request: pb.PredictRequest, time_remaining: float | None) -> dict[str, Any]:
    """POST /v1/predict's body; without a ``timeout_s`` the call's deadline
    (``time_remaining`` seconds) bounds the wait in the batcher's queue."""
    body: dict[str, Any] = {}
    for name in ("model", "version", "model_name"):
        if getattr(request, name):
            body[name] = getattr(request, name)
    if request.inputs:
        body["inputs"] = {
            name: tensor_rows(tensor, f"inputs.{name}") for name, tensor in request.inputs.items()
        }
    if request.features:
        body["features"] = list(request.features)
    if request.HasField("timeout_s"):
        body["timeout_s"] = request.timeout_s
    elif time_remaining is not None:
        body["timeout_s"] = min(max(time_remaining, 1e-3), MAX_TIMEOUT_S)
    return body


def tensor_rows(tensor: pb.Tensor, param: str) -> list[Any]:
    """A tensor as the JSON API's nested lists (a single row as it is when
    the shape is left out)."""
    if tensor.data and tensor.int_data:
        raise invalid_argument(param, "give the values as data or as int_data, not both")
    values: list[Any] = list(tensor.int_data) if tensor.int_data else list(tensor.data)
    if not tensor.shape:
        return values
    shape = list(tensor.shape)
    if any(d < 0 for d in shape) or int(np.prod(shape)) != len(values):
        raise invalid_argument(
            f"{param}.shape", f"shape {shape} does not hold the {len(values)} values given"
        )
    result: list[Any] = np.asarray(values).reshape(shape).tolist()
    return result


def tensor(rows: list[Any]) -> pb.Tensor:
    """The JSON API's nested lists as a tensor."""
    array = np.asarray(rows)
    flat = array.reshape(-1).tolist()
    if array.dtype.kind in "iub":
        return pb.Tensor(shape=array.shape, int_data=flat)
    return pb.Tensor(shape=array.shape, data=flat)


def predict_response(body: dict[str, Any]) -> pb.PredictResponse:
    return pb.PredictResponse(
        id=body["id"],
        model=body["model"],
        outputs={name: tensor(rows) for name, rows in body["outputs"].items()},
        class_id=body.get("class_id") or [],
        label=body.get("label") or [],
        confidence=body.get("confidence") or [],
        latency_ms=body["latency_ms"],
    )


def embed_body(request: pb.EmbedRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model, "input": list(request.input)}
    if request.HasField("truncate"):
        body["truncate"] = request.truncate
    return body


def embed_response(body: dict[str, Any]) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        model=body["model"],
        data=[pb.Embedding(index=d["index"], embedding=d["embedding"]) for d in body["data"]],
        usage=usage(body.get("usage") or {}),
    )


def models_response(body: dict[str, Any]) -> pb.ListModelsResponse:
    """GET /v1/models's cards, or GET /v1/admin/models's load statuses (each
    with its card once ready)."""
    return pb.ListModelsResponse(
        models=[model_info(entry.get("model") or entry, entry) for entry in body["data"]]
    )


def model_info(card: dict[str, Any], status: dict[str, Any]) -> pb.ModelInfo:
    return pb.ModelInfo(
        id=status["id"],
        root=card.get("root") or "",
        version=card.get("version") or "",
        tasks=card.get("tasks") or [],
        state=status.get("state") or card.get("state") or "",
        max_model_len=card.get("max_model_len") or 0,
        inputs=[tensor_spec(s) for s in card.get("inputs") or []],
        outputs=[tensor_spec(s) for s in card.get("outputs") or []],
        labels=card.get("labels") or [],
        error=status.get("error") or "",
    )


def tensor_spec(spec: dict[str, Any]) -> pb.TensorSpec:
    return pb.TensorSpec(name=spec["name"], dtype=spec["dtype"], shape=spec["shape"])
