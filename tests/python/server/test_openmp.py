"""The OpenMP settings a server runs its engines with (server/openmp.py):
when libgomp's spin counts as bounded, the environment `modelbench serve`
re-executes itself with (and that libgomp really reads it then), an
operator's own setting kept, and the registry building an engine on a
thread that ends once the spin is bounded, on a pooled thread otherwise."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modelbench.config import ModelConfig
from modelbench.engine.sampling_params import SamplingParams
from modelbench.server.openmp import (
    SPIN_COUNT,
    bounded_spin_environ,
    spin_is_bounded,
)
from modelbench.server.registry import ModelRegistry

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN

# Prints the spin count before and after the call, and the pid: a re-executed
# process prints its first line twice, under one pid.
PROBE = """
import os
from modelbench.server.openmp import run_with_bounded_spin
print("before", os.environ.get("GOMP_SPINCOUNT"), os.getpid(), flush=True)
run_with_bounded_spin()
print("after", os.environ.get("GOMP_SPINCOUNT"), os.getpid(), flush=True)
"""


def run_probe(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, "OMP_DISPLAY_ENV": "VERBOSE", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.parametrize(
    ("environ", "bounded"),
    [
        ({}, False),
        ({"GOMP_SPINCOUNT": "2000"}, True),
        ({"GOMP_SPINCOUNT": "0"}, True),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, True),
        ({"OMP_WAIT_POLICY": " passive "}, True),
        ({"OMP_WAIT_POLICY": "active"}, False),  # libgomp then spins for minutes
        ({"OMP_NUM_THREADS": "2"}, False),
    ],
)
def test_when_the_spin_is_bounded(environ: dict[str, str], bounded: bool) -> None:
    assert spin_is_bounded(environ) is bounded


def test_the_environment_to_reexecute_with() -> None:
    assert bounded_spin_environ({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "GOMP_SPINCOUNT": str(SPIN_COUNT),
    }
    # An operator's choice is kept, whichever of the two it is.
    assert bounded_spin_environ({"GOMP_SPINCOUNT": "300000"}) is None
    assert bounded_spin_environ({"OMP_WAIT_POLICY": "active"}) is None


def test_serve_reexecutes_itself_once_and_libgomp_reads_the_count() -> None:
    done = run_probe()
    lines = done.stdout.split()
    pid = lines[2]
    assert done.stdout.splitlines() == [
        f"before None {pid}",  # the first image, which re-executes
        f"before {SPIN_COUNT} {pid}",  # the same process, with the count
        f"after {SPIN_COUNT} {pid}",
    ]
    # libgomp printed its settings once per image, as torch loaded it.
    assert "GOMP_SPINCOUNT = '300000'" in done.stderr
    assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" in done.stderr


def test_an_operators_count_is_kept_without_reexecuting() -> None:
    done = run_probe(GOMP_SPINCOUNT="50")
    pid = done.stdout.split()[2]
    assert done.stdout.splitlines() == [f"before 50 {pid}", f"after 50 {pid}"]
    assert "GOMP_SPINCOUNT = '50'" in done.stderr


def load_and_generate(path: Path) -> tuple[set[str], int]:
    """Start a registry's engine for the tiny model and generate from it;
    the names of the Python threads the load left behind, and the tokens."""
    registry = ModelRegistry()
    config = ModelConfig(
        name="tiny", path=str(path), max_model_len=MAX_MODEL_LEN, kv_cache_memory=KV_CACHE_MEMORY
    )
    handle = registry.add(config)

    async def main() -> tuple[set[str], int]:
        before = set(threading.enumerate())
        await registry.start(handle)
        new = set(threading.enumerate()) - before
        for thread in new:
            if thread.name == "modelbench-AsyncEngine":
                thread.join(timeout=10)  # it handed the engine over, and is ending
        left = {t.name for t in new if t.is_alive()}
        assert handle.engine is not None
        params = SamplingParams(max_tokens=4, ignore_eos=True, temperature=0.0)
        num = 0
        async for out in handle.engine.generate([1, 2, 3], params):
            num += len(out.outputs[0].token_ids)
        await registry.shutdown()
        return left, num

    return asyncio.run(main())


def test_a_bounded_spin_builds_the_engine_on_a_thread_that_ends(
    tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOMP_SPINCOUNT", str(SPIN_COUNT))
    left, num = load_and_generate(tiny_llama_path)
    assert num == 4
    assert left == set()  # the builder has ended, and no pooled worker was started


def test_an_unbounded_spin_builds_the_engine_on_a_pooled_thread(
    tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    left, num = load_and_generate(tiny_llama_path)
    assert num == 4
    assert len(left) == 1 and left.pop().startswith("asyncio_")  # to_thread's worker lives on
