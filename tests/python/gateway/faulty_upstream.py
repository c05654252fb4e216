"""A real OpenAI-compatible upstream process that misbehaves on purpose, for
the gateway's fault-injection tests and its overhead benchmark.

    python -m tests.python.gateway.faulty_upstream --port 9001 --mode ok

Modes (``POST /mode {"mode": ...}`` changes it while it runs):
- ``ok``: answers at once (a completion, a chat message, or a stream of a
  few events) saying which port answered, or with ``--text``;
- ``error500``: 500 to every generation request;
- ``busy``: 429 with ``Retry-After: 1``;
- ``slow``: streams 100 events 0.1 s apart (to watch a client go away);
- ``hang``: accepts the request and never answers;
- ``drop``: streams two events, then closes the connection mid-stream
  (a non-streamed request gets its connection closed with no response);
- ``die``: exits the process on the next generation request.

``GET /v1/models`` answers 200 in every mode but ``hang`` (where it hangs
too), so health checks see what a client would. ``GET /stats`` counts the
generation requests it has seen, and those still open."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODES = ("ok", "slow", "error500", "busy", "hang", "drop", "die")


class State:
    def __init__(self, mode: str, port: int, text: str | None = None) -> None:
        self.mode = mode
        self.port = port
        self.text = text  # the answer in mode ok; None: "answered by PORT"
        self.requests = 0
        self.open = 0


def make_app(state: State) -> Starlette:
    async def models(request: Request) -> Response:
        if state.mode == "hang":
            await asyncio.sleep(3600)
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def set_mode(request: Request) -> Response:
        mode = (await request.json()).get("mode")
        if mode not in MODES:
            return JSONResponse({"error": f"mode must be one of {MODES}"}, status_code=400)
        state.mode = mode
        return JSONResponse({"mode": mode})

    async def stats(request: Request) -> Response:
        return JSONResponse({"requests": state.requests, "open": state.open, "mode": state.mode})

    async def generate(request: Request) -> Response:
        body = await request.json()
        state.requests += 1
        chat = request.url.path.endswith("/chat/completions")
        text = state.text or f"answered by {state.port}"
        if state.mode == "die":
            os._exit(1)
        if state.mode == "error500":
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=500)
        if state.mode == "busy":
            return JSONResponse(
                {"error": {"message": "busy"}}, status_code=429, headers={"Retry-After": "1"}
            )
        if state.mode == "hang":
            state.open += 1
            try:
                await asyncio.sleep(3600)
            finally:
                state.open -= 1
        if body.get("stream"):
            return StreamingResponse(events(body, chat, text), media_type="text/event-stream")
        if state.mode == "drop":
            raise ConnectionResetError("injected: the connection drops")
        return JSONResponse(whole(body, chat, text))

    async def events(body: dict[str, Any], chat: bool, text: str) -> AsyncIterator[bytes]:
        state.open += 1
        try:
            words = text.split(" ")
            if state.mode == "slow":
                words = [f"w{i}" for i in range(100)]
            for i, word in enumerate(words):
                if state.mode == "drop" and i == 2:
                    raise ConnectionResetError("injected: the stream drops")
                piece = word if i == 0 else " " + word
                yield sse(chunk(body, chat, piece, None))
                await asyncio.sleep(0.1 if state.mode == "slow" else 0)
            yield sse(chunk(body, chat, "", "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {**chunk(body, chat, "", None), "choices": []}
                usage["usage"] = {"prompt_tokens": 3, "completion_tokens": len(words)}
                usage["usage"]["total_tokens"] = 3 + len(words)
                yield sse(usage)
            yield b"data: [DONE]\n\n"
        finally:
            state.open -= 1

    routes = [
        Route("/v1/models", models),
        Route("/mode", set_mode, methods=["POST"]),
        Route("/stats", stats),
        Route("/v1/completions", generate, methods=["POST"]),
        Route("/v1/chat/completions", generate, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def whole(body: dict[str, Any], chat: bool, text: str) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "fake-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [choice],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }


def chunk(body: dict[str, Any], chat: bool, text: str, finish: str | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["delta"] = {"content": text}
    else:
        choice["text"] = text
    return {
        "id": "fake-1",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [choice],
    }


def sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--text", help='what it answers (default: "answered by PORT")')
    args = parser.parse_args()
    state = State(args.mode, args.port, args.text)
    uvicorn.run(make_app(state), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
