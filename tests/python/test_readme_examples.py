"""Every example in the README works as written.

The README's fenced blocks are extracted and each is handled by what it is:

- ``client``: requests to the server (curl). A real ``modelbench serve`` with
  the default model is started (as the README's first command starts it,
  on a free port instead of 8000) and the block runs in bash against it,
  text unchanged but for the port; each request must answer 2xx with JSON
  within the time limit (the answers stop by themselves).
- ``python``: the block runs in a fresh interpreter.
- ``models_file``: a TOML block is a valid models or gateway file.
- ``commands``: every ``modelbench ...`` line parses with the real command
  line (flags and values as written); the lines that need other machines,
  placeholder paths or long runs are not started.
- ``scripts``: each ``python3 benchmarks/...`` script exists and answers
  ``--help`` with the flags the line uses.
- ``layout``: every path the layout lists exists.
- ``grpc``: the gRPC client, run against a real ``modelbench serve
  --grpc-port`` by tests/python/server/grpc/test_grpc_readme.py (with the
  grpcurl lines' request bodies), which serves what the README's models file
  declares.
- ``ci``: the setup and test commands, which CI itself runs.

A block this file does not know is a failure saying to classify it, so a
new example cannot slip in untested.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

from modelbench.cli.main import build_parser
from modelbench.config import ModelsFile

from . import serve_process
from .server.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE_TIMEOUT_S = 120  # a whole block; the default model answers a short question in seconds

# The first line of each block -> how it is checked.
KINDS = {
    "bash scripts/setup.sh && modelbench serve": "ci",
    "bash scripts/test.sh": "ci",
    "python3 scripts/lock_constraints.py --upgrade && bash scripts/test.sh": "ci",
    "curl http://127.0.0.1:8000/v1/chat/completions": "client",
    "from modelbench import LLM, SamplingParams": "python",
    "from modelbench import LLM  # embeddings": "python",
    "curl -s localhost:8000/v1/embeddings": "client",
    "from modelbench.cache import": "python",
    "modelbench serve ": "commands",
    "curl -s localhost:8000/v1/responses": "client",
    "curl -s localhost:8000/v1/infer": "client",
    "curl -s localhost:8000/v1/verify": "client",
    "modelbench verify --base-url": "commands",
    "[[models]]": "models_file",
    "modelbench serve --port 8001 &": "commands",  # three processes and their shells
    "[[upstreams]]": "models_file",
    "# one process: the default model locally": "commands",  # needs the upstream on 8001
    "modelbench gateway --port 8001 --redis-url": "commands",  # needs a Redis named cache
    "export MODELBENCH_DATABASE_URL=": "commands",  # a PostgreSQL named db-host
    "modelbench serve &": "commands",  # benchmark runs: minutes each
    "python3 benchmarks/": "scripts",  # measurements: minutes each
    "modelbench eval humaneval --style chat": "commands",  # minutes: numbers in the README
    "pyproject.toml": "layout",
    "cmake -S . -B build/dev": "ci",  # a second full build of what CI builds
    "# modelbench serve --models-file models.toml --grpc-port": "grpc",
}


@dataclass
class Block:
    line: int
    lang: str
    text: str

    @property
    def kind(self) -> str | None:
        first = self.text.splitlines()[0]
        starts = [start for start in KINDS if first.startswith(start)]
        return KINDS[max(starts, key=len)] if starts else None


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
    ]


BLOCKS = readme_blocks()


def blocks_of(kind: str) -> list[Block]:
    return [b for b in BLOCKS if b.kind == kind]


def test_every_readme_block_is_checked() -> None:
    unknown = [f"README.md:{b.line}: {b.text.splitlines()[0]!r}" for b in BLOCKS if b.kind is None]
    assert not unknown, (
        "README blocks this test does not check; add each to KINDS in "
        f"{Path(__file__).name} (and make it run): {unknown}"
    )
    assert {b.kind for b in BLOCKS} >= {"client", "python", "commands", "models_file"}


def commands_in(block: Block) -> list[list[str]]:
    """The ``modelbench ...`` command lines of a shell block, as argv
    (continuations joined, comments and a trailing ``&`` dropped)."""
    joined = block.text.replace("\\\n", " ")
    argvs, pending = [], ""
    for line in joined.splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted argument goes on to the next line
            continue
        pending = ""
        if words and words[-1] == "&":
            words = words[:-1]
        if words and words[0] == "modelbench":
            argvs.append(words[1:])
    return argvs


@pytest.mark.parametrize("block", blocks_of("commands"), ids=lambda b: f"line{b.line}")
def test_commands_parse_as_written(block: Block) -> None:
    argvs = commands_in(block)
    assert argvs, f"README.md:{block.line} has no modelbench command"
    parser = build_parser()
    for argv in argvs:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"README.md:{block.line}: `modelbench {shlex.join(argv)}` exits {exc}")


@pytest.mark.parametrize("block", blocks_of("models_file"), ids=lambda b: f"line{b.line}")
def test_models_files_are_valid(block: Block) -> None:
    ModelsFile.model_validate(tomllib.loads(block.text))


def test_benchmark_scripts_take_the_flags_the_readme_gives() -> None:
    (block,) = blocks_of("scripts")
    for line in block.text.splitlines():
        words = shlex.split(line, comments=True)
        script = ROOT / words[1]
        assert script.is_file(), f"README.md:{block.line}: {words[1]} does not exist"
        help_text = subprocess.run(
            [sys.executable, str(script), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert flag in help_text, f"{words[1]} has no {flag}"


def test_the_layout_lists_what_exists() -> None:
    (block,) = blocks_of("layout")
    for line in block.text.splitlines():
        name = line.split()[0] if line.strip() and not line.startswith(" ") else None
        if name:
            assert (ROOT / name).exists(), f"the README's layout lists {name}, which is missing"


# ---- run against a real server ----------------------------------------------


def shell_env() -> dict[str, str]:
    """The test's interpreter and package behind the README's command names."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PY": sys.executable}


PRELUDE = """set -euo pipefail
modelbench() { "$PY" -m modelbench "$@"; }
python3() { "$PY" "$@"; }
curl() { command curl --silent --show-error --fail-with-body --max-time 110 "$@"; echo; }
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``modelbench serve`` as the README starts it, on a free port."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("readme") / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["bash", "-c", PRELUDE + f"exec modelbench serve --port {port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**shell_env(), "MODELBENCH_RUN_WORKER": "false"},
        )
    try:
        serve_process.wait_ready(proc, f"http://127.0.0.1:{port}", log_path)
        yield port
    finally:
        serve_process.stop(proc, grace_s=60)


@pytest.mark.parametrize("block", blocks_of("client"), ids=lambda b: f"line{b.line}")
def test_client_examples_answer(block: Block, served: int) -> None:
    text = re.sub(r"(localhost|127\.0\.0\.1):8000", f"127.0.0.1:{served}", block.text)
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", PRELUDE + text],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        env=shell_env(),
    )
    assert done.returncode == 0, f"README.md:{block.line} failed:\n{done.stdout}\n{done.stderr}"
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert answers, f"README.md:{block.line} printed nothing"
    for answer in answers:
        assert "error" not in answer or answer["error"] is None, answer
        if "choices" in answer:  # a chat answer that ended by itself or at its bound
            choice = answer["choices"][0]
            assert choice["message"]["content"].strip()
            assert choice["finish_reason"] in ("stop", "length")
    assert time.monotonic() - started < EXAMPLE_TIMEOUT_S


@pytest.mark.parametrize("block", blocks_of("python"), ids=lambda b: f"line{b.line}")
def test_python_examples_run(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.text)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=shell_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"README.md:{block.line} failed:\n{done.stdout}\n{done.stderr}"
