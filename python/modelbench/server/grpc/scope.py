"""How a request that came in over gRPC is told apart in the app: its ASGI
scope carries the gRPC method in ``scope["extensions"]``, which the traffic
middleware (metrics, drain, access log) and the request log read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GRPC_EXTENSION = "modelbench.grpc"


def grpc_method(scope: Mapping[str, Any]) -> str | None:
    """The full gRPC method (``/modelbench.v1.Inference/Generate``) of a
    request that came in over gRPC; None for an HTTP request."""
    extension = (scope.get("extensions") or {}).get(GRPC_EXTENSION)
    return extension.get("method") if extension else None
