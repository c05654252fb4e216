"""llama.cpp for benchmarks/vs_llamacpp.py: built once from llama-cpp-python's sdist, then run.

llama-cpp-python's sdist vendors a pinned llama.cpp tree (with its git
metadata), so a version of the PyPI package names one llama.cpp commit. The
tree is unpacked and `llama-bench` and `llama-server` are built (Release,
GGML_NATIVE, static, no curl/openssl, no web UI download) into a cache
folder, reused while both binaries are there.

Built without AMX unless asked (``amx=True``): on our x86 host (Sapphire
Rapids under KVM, AMX permitted by the kernel) ggml's AMX kernels segfault in
ggml_backend_amx_mul_mat on the default model's Q4_1 weights at commit
0c1e570, in llama-bench and llama-server alike. Without AMX, ggml's AVX-512
kernels and its weight repacking (q8_0) run as they do by default. Also here: llama-bench's JSON,
llama-server's start and stop, and resident memory read from /proc.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from _report import free_port  # benchmarks/_report.py (this folder is on sys.path)

DEFAULT_VERSION = "0.3.36"  # llama-cpp-python's version; it pins the llama.cpp commit
BINARIES = ("llama-bench", "llama-server")


@dataclass(frozen=True)
class LlamaCpp:
    """A built llama.cpp: its binaries and where they came from."""

    bin_dir: Path
    info: dict  # package version, llama.cpp commit, build flags

    def binary(self, name: str) -> Path:
        return self.bin_dir / name


def default_cache_dir(version: str, amx: bool = False) -> Path:
    return Path.home() / ".cache" / "modelbench" / "llamacpp" / (version + ("-amx" if amx else ""))


def ensure_built(
    version: str, root: Path, sdist: Path | None = None, jobs: int | None = None, amx: bool = False
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
    if not amx and platform.machine().lower() in ("x86_64", "amd64"):
        # Explicit -mno-* win over what -march=native implies, whatever their order.
        no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        flags += [f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]
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
        "amx": amx,
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
    llama: LlamaCpp,
    model: Path,
    threads: int,
    parallel: int,
    ctx: int,
    port: int,
    log: Path,
    extra: list[str] | None = None,
) -> subprocess.Popen:
    """llama-server on loopback, ready to answer (its /health is 200 once the model is loaded)."""
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [
                str(llama.binary("llama-server")),
                *("-m", str(model), "-t", str(threads), "-np", str(parallel)),
                *("-c", str(ctx), "--host", "127.0.0.1", "--port", str(port)),
                *(extra or []),
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


def mapped_rss_bytes(pid: int, path: Path) -> int:
    """Resident bytes of a process's mappings of one file (/proc/<pid>/smaps)."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


# "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB"
BUFFER_LINE = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")


def buffer_sizes(log: str) -> dict[str, int]:
    """Bytes of each buffer a llama.cpp log reports, by "<buffer type> <kind>": "CPU_Mapped
    model", "CPU_REPACK model", "CPU KV", "CPU compute", "CPU output"."""
    sizes: dict[str, int] = {}
    for buffer_type, kind, mib in BUFFER_LINE.findall(log):
        key = f"{buffer_type} {kind}"
        sizes[key] = sizes.get(key, 0) + round(float(mib) * 1024**2)
    return sizes


def llama_server_memory(
    llama: LlamaCpp, model: Path, threads: int, parallel: int, ctx: int, workdir: Path
) -> dict:
    """llama-server's resident memory once loaded, and of it what the weights hold: the
    resident pages of its mapping of the GGUF file plus the model buffers it copied out of
    it (repacked weights: the log's model buffers other than "*_Mapped"). A run of its own,
    at debug verbosity (the buffer sizes are debug lines), not the one that is timed."""
    log = workdir / "llama-server-memory.log"
    server = start_llama_server(
        llama, model, threads, parallel, ctx, free_port(), log, extra=["-lv", "4"]
    )
    try:
        status = memory_status(server.pid)
        mapped = mapped_rss_bytes(server.pid, model.resolve())
    finally:
        stop(server)
    sizes = buffer_sizes(log.read_text())
    if not any(key.endswith(" KV") for key in sizes):
        raise RuntimeError(f"llama-server's log {log} reports no buffer sizes")
    copied = sum(n for key, n in sizes.items() if key.endswith(" model") and "Mapped" not in key)
    return {
        "rss_bytes": status["VmRSS"],
        "rss_anon_bytes": status.get("RssAnon"),
        "rss_file_bytes": status.get("RssFile"),
        "gguf_mapping_rss_bytes": mapped,
        "buffer_bytes": sizes,
        "weights_rss_bytes": mapped + copied,
        "method": "RSS of the GGUF file's mapping + model buffers copied out of it (repacked)",
    }
