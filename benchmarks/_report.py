"""What every benchmark script does with its result: print it as JSON and,
with --out, write the same JSON to a file."""

from __future__ import annotations

import json
import platform


def emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")


def cpu_model() -> str:
    """The host's CPU as /proc/cpuinfo names it: figures name their host."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
