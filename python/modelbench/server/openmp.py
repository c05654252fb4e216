"""How long the engine's OpenMP threads spin before they sleep, and which
threads may hold an OpenMP pool, in a server process.

The kernels split each step into parallel regions (``at::parallel_for``),
run by libgomp, the OpenMP runtime torch ships. Between two regions a
thread waits for the other: it spins (``GOMP_SPINCOUNT`` iterations of a
pause instruction, about 13 ns each on the hosts measured), then sleeps in
the kernel and must be woken. libgomp reads the count once, when torch
loads it, and uses it in one of two ways:

- while the process holds no more OpenMP threads than there are CPUs, the
  full count: 300,000 by default, about 4 ms. Through a step's regions
  that is ideal on an idle host, but a thread whose partner was
  descheduled burns its core for the whole spin, and on a busy host a step
  took many times as long (``LLM`` shows it);
- once it holds more, at most 100 iterations, about 1 us. A server was in
  this case, since the thread that loaded the model keeps a pool of its
  own: the engine's threads slept and were woken around 150 times a step,
  and a batch-1 decode step took twice as long as in ``LLM``.

So ``modelbench serve`` runs with ``GOMP_SPINCOUNT=SPIN_COUNT`` (it
re-executes itself once to set it, ``run_with_bounded_spin``), and builds
each engine on a thread that ends with the build (``ModelRegistry.start``),
so that the engine's loop thread holds the process's only pool: its
threads spin through a step's short waits without sleeping, and never spin
for long when the host is busy. A second model's loop thread adds a pool,
and so does an embedding while it is computed: then the short spin again,
as before.
Measurements: docs/performance.md, "Serving overhead at batch 1".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# Iterations of libgomp's spin before a waiting thread sleeps: about 26 us,
# longer than most waits inside a step (docs/performance.md has the sweep).
SPIN_COUNT = 2000


def spin_is_bounded(environ: Mapping[str, str] = os.environ) -> bool:
    """True when libgomp was told how long to spin (``GOMP_SPINCOUNT``), or
    not to spin (``OMP_WAIT_POLICY=passive``), so that a single OpenMP pool
    does not mean 4 ms spins. libgomp read these when torch loaded; they
    are read here from the same environment."""
    if "GOMP_SPINCOUNT" in environ:
        return True
    return environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"


def bounded_spin_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """The environment to re-execute with, or None when libgomp's waiting is
    already configured (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` set: an
    operator's choice is kept)."""
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return None
    return {**environ, "GOMP_SPINCOUNT": str(SPIN_COUNT)}


def run_with_bounded_spin() -> None:
    """Re-execute this process with ``GOMP_SPINCOUNT=SPIN_COUNT`` unless
    libgomp's waiting is configured already; returns when it is. Call it
    before any work that must survive: ``os.execve`` replaces the process
    (same pid, same arguments, same open standard streams)."""
    environ = bounded_spin_environ()
    if environ is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)
