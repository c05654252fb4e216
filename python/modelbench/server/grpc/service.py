"""``modelbench.v1.Inference``: each method is its HTTP route, run in
process through the app (asgi_call.py), its body converted (convert.py) and
its errors turned into gRPC statuses (status.py). Every call is counted in
``modelbench:grpc_requests{grpc_method, grpc_code}`` and its duration
observed; the per-request families it reaches (tokens, latencies) carry
``protocol="grpc"``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import FastAPI

from modelbench.server.grpc import convert
from modelbench.server.grpc import inference_pb2 as pb
from modelbench.server.grpc.asgi_call import AsgiCall
from modelbench.server.grpc.inference_pb2_grpc import InferenceServicer
from modelbench.server.grpc.status import GrpcError, from_http
from modelbench.server.prometheus import ServerMetrics

SERVICE_NAME = "modelbench.v1.Inference"
# Response headers handed to the client as initial metadata.
ANSWER_HEADERS = ("x-request-id", "x-modelbench-record-id")


class Outcome:
    """One call's method and status code, observed when it ends."""

    def __init__(self, metrics: ServerMetrics, method: str) -> None:
        self.metrics = metrics
        self.method = f"/{SERVICE_NAME}/{method}"
        self.code = grpc.StatusCode.OK
        self.started = time.monotonic()

    def end(self) -> None:
        self.metrics.observe_grpc(self.method, self.code.name, time.monotonic() - self.started)


class InferenceService(InferenceServicer):
    """The service over ``app``'s routes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def _call(
        self,
        outcome: Outcome,
        context: grpc.aio.ServicerContext,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> AsgiCall:
        return AsgiCall(
            self.app,
            outcome.method,
            method,
            path,
            body,
            context.invocation_metadata() or (),
            context.peer(),
        )

    async def _answer(self, call: AsgiCall, context: grpc.aio.ServicerContext) -> None:
        """Wait for the app's status: an error is raised as the gRPC error;
        a success sends the request's ids as initial metadata."""
        status = await call.start()
        if status >= 400:
            raise from_http(status, await call.read(), call.headers)
        await context.send_initial_metadata(
            tuple((k, call.headers[k]) for k in ANSWER_HEADERS if k in call.headers)
        )

    async def _unary(
        self,
        name: str,
        context: grpc.aio.ServicerContext,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """A non-streamed route's JSON answer (an error aborts the call)."""
        outcome = Outcome(self.app.state.metrics, name)
        call = self._call(outcome, context, method, path, body)
        try:
            await self._answer(call, context)
            answer: dict[str, Any] = json.loads(await call.read())
            return answer
        except GrpcError as error:
            outcome.code = error.code
            await error.abort(context)
            raise AssertionError("abort raises") from None
        except asyncio.CancelledError:
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            outcome.code = grpc.StatusCode.UNKNOWN  # what grpc answers for a handler that raised
            raise
        finally:
            call.disconnect()  # the client gone before the answer: the route sees it
            outcome.end()

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        outcome = Outcome(self.app.state.metrics, "Generate")
        call = None
        try:
            path, body = convert.generate_body(request)
            call = self._call(outcome, context, "POST", path, body)
            await self._answer(call, context)
            async for data in sse_events(call.chunks()):
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:  # the stream broke off after it started
                    raise from_http(500, chunk["error"], {})
                for response in convert.generate_responses(chunk):
                    yield response
        except GrpcError as error:
            outcome.code = error.code
            await error.abort(context)
        except (asyncio.CancelledError, GeneratorExit):
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            outcome.code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            if call is not None:
                call.disconnect()  # a client that cancels aborts the request in the engine
            outcome.end()

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        try:
            body = convert.predict_body(request, context.time_remaining())
        except GrpcError as error:
            return await self._refuse("Predict", error, context)
        answer = await self._unary("Predict", context, "POST", "/v1/predict", body)
        return convert.predict_response(answer)

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        body = convert.embed_body(request)
        answer = await self._unary("Embed", context, "POST", "/v1/embeddings", body)
        return convert.embed_response(answer)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        path = "/v1/admin/models" if request.all_versions else "/v1/models"
        answer = await self._unary("ListModels", context, "GET", path, None)
        return convert.models_response(answer)

    async def _refuse(self, name: str, error: GrpcError, context: grpc.aio.ServicerContext) -> Any:
        """A request refused before it reaches the app (a tensor whose shape
        does not hold its values)."""
        outcome = Outcome(self.app.state.metrics, name)
        outcome.code = error.code
        outcome.end()
        await error.abort(context)


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The data of each server-sent event in a stream's pieces."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.decode().splitlines():
                if line.startswith("data: "):
                    yield line[len("data: ") :]
