"""The gRPC server's start and stop, each in a process of its own: SIGTERM
drains gRPC as it drains HTTP (health turns NOT_SERVING, a new call is
UNAVAILABLE, the drain's refusal saying so, the stream in flight runs to its
end, and the process exits 0); a --grpc-port in use fails the start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelbench.server.grpc import inference_pb2 as pb
from modelbench.server.grpc.inference_pb2_grpc import InferenceStub

from ... import serve_process
from .conftest import DIGITS_NAME, LLM_NAME, GrpcServed, start_served
from .test_grpc_errors import details

MAX_TOKENS = 200


@pytest.fixture
def draining(tmp_path: Path, digits_path: Path) -> Iterator[GrpcServed]:
    running = start_served(tmp_path, digits_path)
    try:
        yield running
    finally:
        serve_process.stop(running.proc, grace_s=0)  # type: ignore[arg-type]


def test_sigterm_drains_grpc(draining: GrpcServed) -> None:
    md = draining.metadata()
    with grpc.insecure_channel(draining.target) as channel:
        stub = InferenceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = pb.GenerateRequest(
            model=LLM_NAME,
            prompt="Once upon a time",
            max_tokens=MAX_TOKENS,
            min_tokens=MAX_TOKENS,
            temperature=0.0,
        )
        responses: list[pb.GenerateResponse] = []
        first = threading.Event()

        def stream() -> None:
            for response in stub.Generate(request, metadata=md, timeout=120):
                responses.append(response)
                first.set()

        streaming = threading.Thread(target=stream)
        streaming.start()
        assert first.wait(60), "the stream never started"
        draining.proc.terminate()  # type: ignore[attr-defined]

        check = health_pb2.HealthCheckRequest(service="")
        deadline = time.monotonic() + 10
        while health.Check(check, timeout=5).status != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health still SERVING while draining"
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(
                pb.PredictRequest(model=DIGITS_NAME, features=[0.0] * 64), metadata=md, timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(refused.value)["ErrorInfo"].reason == "server_draining"  # type: ignore[attr-defined]
        assert streaming.is_alive(), "the stream ended before the drain could be seen"

        streaming.join(120)
    assert not streaming.is_alive()
    assert responses[-1].finish_reason == "length"  # ran to max_tokens, not cut off
    assert draining.proc.wait(60) == 0  # type: ignore[attr-defined]


def test_a_grpc_port_in_use_fails_the_start(tmp_path: Path, digits_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "modelbench", "serve", "--model", str(digits_path),
             "--port", "0", "--grpc-port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(sys.path),
                "MODELBENCH_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
                "MODELBENCH_KEYS_FILE": str(tmp_path / "keys.json"),
            },
        )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"gRPC cannot listen on 127.0.0.1:{port}" in done.stderr
