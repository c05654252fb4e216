"""llama.cpp for benchmarks/vs_llamacpp.py: built once from llama-cpp-python's sdist, then run.

llama-cpp-python's sdist vendors a pinned llama.cpp tree (with its git
metadata), so a version of the PyPI package names one llama.cpp commit. The
tree is unpacked and `llama-bench` and `llama-server` are built (Release,
GGML_NATIVE, static, no curl/openssl, no web UI download) into a cache
folder, reused while both binaries are there. Also here: llama-bench's JSON,
llama-server's start and stop, and resident memory read from /proc.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION = "0.3.36"  # llama-cpp-python's version; it pins the llama.cpp commit
BINARIES = ("llama-bench", "llama-server")


@dataclass(frozen=True)
class LlamaCpp:
    """A built llama.cpp: its binaries and where they came from."""

    bin_dir: Path
    info: dict  # package version, llama.cpp commit, build flags

    def binary(self, name: str) -> Path:
        return self.bin_dir / name


def default_cache_dir(version: str) -> Path:
    return Path.home() / ".cache" / "modelbench" / "llamacpp" / version


def ensure_built(
    version: str, root: Path, sdist: Path | None = None, jobs: int | None = None
) -> LlamaCpp:
    """Build llama.cpp under ``root`` unless its binaries and build record are already there.

    ``sdist`` is llama-cpp-python's source archive; without it the archive is
    looked for in ``root`` and downloaded there with pip when missing.
    """
    bin_dir = root / "build" / "bin"
    record = root / "llamacpp.json"
    if record.is_file() and all((bin_dir / b).is_file() for b in BINARIES):
        return LlamaCpp(bin_dir, json.loads(record.read_text()))
    root.mkdir(parents=True, exist_ok=True)
    sdist = sdist or _download_sdist(version, root)
    source = _unpack(sdist, root / "src")
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_NATIVE=ON",
        "-DBUILD_SHARED_LIBS=OFF",  # binaries that run from anywhere, no rpath
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # no download at configure time
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    build = root / "build"
    _run(["cmake", "-S", str(source), "-B", str(build), *generator, *flags])
    _run(["cmake", "--build", str(build), "--target", *BINARIES, "-j", str(jobs or os.cpu_count())])
    missing = [b for b in BINARIES if not (bin_dir / b).is_file()]
    if missing:
        raise RuntimeError(f"the llama.cpp build finished without {missing} in {bin_dir}")
    info = {
        "llama_cpp_python": version,
        "sdist": sdist.name,
        "commit": _git_commit(source),
        "cmake_flags": flags,
    }
    record.write_text(json.dumps(info, indent=2) + "\n")
    return LlamaCpp(bin_dir, info)


def _download_sdist(version: str, root: Path) -> Path:
    name = f"llama_cpp_python-{version}.tar.gz"
    if not (root / name).is_file():
        _run(
            [
                *(sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}"),
                *("--no-deps", "--no-binary", ":all:", "-d", str(root)),
            ]
        )
    if not (root / name).is_file():
        raise RuntimeError(f"pip download did not leave {name} in {root}")
    return root / name


def _unpack(sdist: Path, dest: Path) -> Path:
    if not sdist.is_file():
        raise ValueError(f"llama-cpp-python sdist not found: {sdist}")
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    (top,) = dest.iterdir()  # llama_cpp_python-<version>/
    source = top / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        raise RuntimeError(f"{sdist.name} has no vendor/llama.cpp to build")
    return source


def _git_commit(source: Path) -> str | None:
    """The vendored tree's commit: the sdist carries the submodule's git folder."""
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _run(command: list[str]) -> None:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=sys.stderr)


def run_llama_bench(
    llama: LlamaCpp, model: Path, threads: int, n_prompt: int, n_gen: int, repetitions: int
) -> list[dict]:
    """llama-bench's JSON records: one for pp<n_prompt>, one for tg<n_gen>."""
    out = subprocess.run(
        [
            str(llama.binary("llama-bench")),
            *("-m", str(model), "-t", str(threads)),
            *("-p", str(n_prompt), "-n", str(n_gen), "-r", str(repetitions), "-o", "json"),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(server: subprocess.Popen, url: str, what: str, timeout: float = 600) -> None:
    """Poll ``url`` until it answers 200; raise when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if server.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after {timeout:.0f} s")
        time.sleep(0.3)


def start_llama_server(
    llama: LlamaCpp, model: Path, threads: int, parallel: int, ctx: int, port: int, log: Path
) -> subprocess.Popen:
    """llama-server on loopback, ready to answer (its /health is 200 once the model is loaded)."""
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [
                str(llama.binary("llama-server")),
                *("-m", str(model), "-t", str(threads), "-np", str(parallel)),
                *("-c", str(ctx), "--host", "127.0.0.1", "--port", str(port)),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(server, f"http://127.0.0.1:{port}/health", "llama-server")
    except BaseException:
        stop(server)
        raise
    return server


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def memory_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of a process now, in bytes (/proc/<pid>/status)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024  # "<n> kB"
    if "VmRSS" not in out:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return out


def rss_bytes(pid: int) -> int:
    return memory_status(pid)["VmRSS"]


# "llama_kv_cache:        CPU KV buffer size =   384.00 MiB"
BUFFER_LINE = re.compile(r"\b(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")


def buffer_sizes(log: str) -> dict[str, int]:
    """Bytes of each kind of buffer (model, KV, compute, output) a llama.cpp log reports."""
    sizes: dict[str, int] = {}
    for kind, mib in BUFFER_LINE.findall(log):
        sizes[kind] = sizes.get(kind, 0) + round(float(mib) * 1024**2)
    return sizes


def server_memory(pid: int, log: str) -> dict:
    """llama-server's resident memory once ready, and of it what the weights hold: RSS less
    the KV, compute and output buffers its log reports (allocated and cleared at load)."""
    status, sizes = memory_status(pid), buffer_sizes(log)
    if "KV" not in sizes:
        raise RuntimeError("llama-server's log reports no KV buffer size; cannot tell weights")
    others = sum(sizes.get(k, 0) for k in ("KV", "compute", "output"))
    return {
        "rss_bytes": status["VmRSS"],
        "rss_anon_bytes": status.get("RssAnon"),
        "rss_file_bytes": status.get("RssFile"),
        "buffer_bytes": sizes,
        "weights_rss_bytes": status["VmRSS"] - others,
        "method": "RSS once ready - KV, compute and output buffer sizes from its log",
    }
