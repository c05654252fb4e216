"""What every benchmark script does with its result: print it as JSON and,
with --out, write the same JSON to a file; and the small helpers the
scripts that start servers share (a free port, a process's CPU time)."""

from __future__ import annotations

import json
import os
import platform
import socket


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3, state
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
