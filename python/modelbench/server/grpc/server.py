"""The gRPC server in the HTTP server's process and event loop
(``create_app``'s lifespan starts it when ``Settings.grpc_port`` is set):
``modelbench.v1.Inference`` over the app's routes, the standard health
service and server reflection (so ``grpcurl`` needs no proto file).

Health follows ``/ready``: SERVING while it answers 200, NOT_SERVING while
models load, a declared model is gone, or the server drains (the overall
service ``""`` and ``modelbench.v1.Inference`` alike). While draining, new
calls are refused with UNAVAILABLE by the app's traffic middleware and the
calls in flight, streams too, count among the requests the drain waits for;
the server stops after the HTTP server, giving what is left ``grace_s``.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from fastapi import FastAPI
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelbench.server.grpc import inference_pb2, inference_pb2_grpc
from modelbench.server.grpc.service import SERVICE_NAME, InferenceService
from modelbench.server.routes.health import readiness

logger = logging.getLogger("modelbench.server")

HEALTH_POLL_S = 0.25  # how soon health follows /ready


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """A started gRPC server; ``stop`` ends it."""

    def __init__(self, server: grpc.aio.Server, port: int, watching: asyncio.Task) -> None:
        self.server = server
        self.port = port
        self._watching = watching

    async def stop(self, grace_s: float) -> None:
        self._watching.cancel()
        await asyncio.gather(self._watching, return_exceptions=True)
        await self.server.stop(grace_s)


async def start_grpc_server(
    app: FastAPI, host: str, port: int, max_message_bytes: int
) -> GrpcServer:
    """Bind ``host:port`` (a port in use is an error, not a shared port) and
    serve. Messages are bounded like HTTP bodies, by ``max_message_bytes``."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
    )
    inference_pb2_grpc.add_InferenceServicer_to_server(InferenceService(app), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (
        inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(services, server)
    address = listen_address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's own message names no cause
        raise RuntimeError(f"gRPC cannot listen on {address} (--grpc-port): in use?") from exc
    await server.start()
    logger.info("gRPC (%s, health, reflection) on %s", SERVICE_NAME, listen_address(host, bound))
    watching = asyncio.create_task(follow_readiness(app, health_servicer))
    return GrpcServer(server, bound, watching)


async def follow_readiness(app: FastAPI, servicer: health.aio.HealthServicer) -> None:
    """Keep the health service's status where /ready's is."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    last = None
    while True:
        status_code, _ = readiness(app.state)
        status = serving if status_code == 200 else not_serving
        if status != last:
            for service in ("", SERVICE_NAME):
                await servicer.set(service, status)
            last = status
        await asyncio.sleep(HEALTH_POLL_S)
