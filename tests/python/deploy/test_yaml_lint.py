"""yamllint, strict (warnings fail too), over every YAML file under deploy/
with deploy/.yamllint.yaml: Compose, Prometheus, Grafana provisioning,
Kubernetes and the prometheus-adapter values."""

from __future__ import annotations

import subprocess
import sys

from .conftest import DEPLOY, module


def test_yamllint_finds_nothing() -> None:
    module("yamllint", "yamllint")
    files = sorted({*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")})
    assert DEPLOY / "compose.yaml" in files, files  # the walk found them
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-f", "parsable"]
        + ["-c", str(DEPLOY / ".yamllint.yaml"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
