"""The app's errors as gRPC statuses: an HTTP status and OpenAI's error body
(``{"error": {message, type, param, code}}``) become a status code, a
message naming the field, and the rich status details (google.rpc's
``ErrorInfo`` with the error's code, ``BadRequest`` naming the field,
``RetryInfo`` from ``Retry-After``), which grpcio-status reads back
(``rpc_status.from_call``). A refusal that says when to retry also carries
``retry-after`` (seconds) in the trailing metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "modelbench"

HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(eq=False)
class GrpcError(Exception):
    """A call's failure, ready for ``context.abort``."""

    code: grpc.StatusCode
    message: str
    param: str | None = None
    reason: str | None = None  # the API error's code (rate_limit_exceeded, ...)
    retry_after_s: int | None = None
    http_status: int | None = None

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        detail = status_pb2.Status(code=self.code.value[0], message=self.message)
        info = error_details_pb2.ErrorInfo(reason=self.reason or self.code.name, domain=DOMAIN)
        if self.http_status is not None:
            info.metadata["http_status"] = str(self.http_status)
        detail.details.add().Pack(info)
        if self.param is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.param, description=self.message
            )
            detail.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        metadata: list[tuple[str, str | bytes]] = []
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration(seconds=self.retry_after_s)
            detail.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            metadata.append(("retry-after", str(self.retry_after_s)))
        metadata.append(("grpc-status-details-bin", detail.SerializeToString()))
        return tuple(metadata)

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        await context.abort(self.code, self.message, self.trailing_metadata())


def invalid_argument(param: str, message: str) -> GrpcError:
    """A request the service itself refuses before the app sees it."""
    return GrpcError(
        grpc.StatusCode.INVALID_ARGUMENT, f"{param}: {message}", param=param, http_status=400
    )


def from_http(status: int, body: bytes | dict, headers: dict[str, str]) -> GrpcError:
    """The gRPC error for the app's answer ``status`` with its error ``body``."""
    error = body if isinstance(body, dict) else _error_of(body)
    message = str(error.get("message") or f"HTTP {status}")
    param = error.get("param") or None
    if param is not None and param not in message:
        message = f"{param}: {message}"
    code = HTTP_TO_GRPC.get(status)
    if code is None:
        code = grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.FAILED_PRECONDITION
    retry_after = headers.get("retry-after", "")
    return GrpcError(
        code,
        message,
        param=param,
        reason=error.get("code") or None,
        retry_after_s=int(retry_after) if retry_after.isdigit() else None,
        http_status=status,
    )


def _error_of(body: bytes) -> dict:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}
