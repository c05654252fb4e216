"""A real ``python -m modelbench ...`` server process for end-to-end tests:
start it with its stderr in a log file, wait until ``/ready`` answers 200
(failing with the log's tail if it exits or takes too long), stop it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

# A shared, busy host: loading the default model can take minutes there.
READY_TIMEOUT_S = 300


def start(
    args: list[str], env: dict[str, str], log_path: Path, with_stdout: bool = False
) -> subprocess.Popen:
    """``python -m modelbench <args>`` with ``env``, stderr (and stdout too with
    ``with_stdout``) to ``log_path``."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "modelbench", *args],
            stdout=log if with_stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if with_stdout else log,
            env=env,
        )


def log_tail(log_path: Path, chars: int = 3000) -> str:
    return log_path.read_text()[-chars:] if log_path.exists() else "(no log)"


def wait_ready(
    proc: subprocess.Popen, base_url: str, log_path: Path, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Until ``GET /ready`` is 200; stops the process and fails with the log's
    tail if it exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {log_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise AssertionError(
                f"the server was not ready in {timeout_s:.0f} s: {log_tail(log_path)}"
            )
        time.sleep(0.1)


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM (a graceful drain), then SIGKILL after ``grace_s``; at once with 0."""
    if proc.poll() is None and grace_s <= 0:
        proc.kill()
        proc.wait()
    elif proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
