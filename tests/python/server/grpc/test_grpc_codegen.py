"""The committed gRPC code is what scripts/gen_grpc.sh makes of the proto
today: regenerated into a temporary folder, byte for byte the same, so the
proto and the code never drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PACKAGE_DIR = ROOT / "python" / "modelbench" / "server" / "grpc"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_grpc.sh"), str(tmp_path)],
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    for name in GENERATED:
        fresh = (tmp_path / name).read_text()
        committed = (PACKAGE_DIR / name).read_text()
        assert fresh == committed, f"{name} differs from the proto: run scripts/gen_grpc.sh"


def test_the_proto_ships_in_the_package() -> None:
    """Beside the generated code that is imported (the installed package's,
    when the suite runs against an installed one)."""
    from modelbench.server.grpc import inference_pb2

    assert inference_pb2.DESCRIPTOR.name == "modelbench/v1/inference.proto"
    installed = Path(inference_pb2.__file__).parent / "proto" / inference_pb2.DESCRIPTOR.name
    assert (
        installed.read_text() == (PACKAGE_DIR / "proto" / inference_pb2.DESCRIPTOR.name).read_text()
    )
