"""Tracing overhead: what OpenTelemetry tracing costs a served request, off
(the default) and on (exporting over OTLP/HTTP to a real receiver).

One upstream that answers at once (tests/python/gateway/faulty_upstream.py,
mode ``ok``) and two `modelbench gateway --upstream m=...` processes in
front of it, identical but for tracing: ``off`` (no OTEL variables: no
middleware, no span object, no exporter) and ``on``
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` at a receiver in this process that
decodes each export and counts its spans). A request through a gateway is
the path that tracing instruments most densely for the least work: the
server span, the GenAI span, the upstream attempt's CLIENT span with its
``traceparent``, and the store write's span, around an upstream that costs
nothing; on a model server the same spans sit beside milliseconds of
compute per token, so the overhead measured here is its upper bound.

  latency     --requests non-streamed chat completions to each gateway, one
              at a time over one keep-alive connection each, off and on
              alternating in blocks of --block (after a warm-up);
              p50/p99/mean of each, and on minus off
  throughput  a load generator in its own process (aiohttp when installed,
              else httpx; --concurrency connections) for --seconds against
              each gateway, off then on then off again; requests/s, and each
              gateway's own CPU time per request (utime+stime from /proc),
              which does not depend on who else shares the cores

The JSON says the ratios on/off (throughput, CPU per request) and how many
spans the receiver decoded (the "on" numbers are only honest if it got them).
Never asserts on time.

    git worktree add /tmp/before 49bbc6e   # the code from before tracing
    python benchmarks/tracing_overhead.py --baseline-python /tmp/before/python \
        --out benchmarks/results/tracing_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from _report import emit  # benchmarks/_report.py
from gateway_overhead import (  # benchmarks/gateway_overhead.py (this folder is on sys.path)
    BODY,
    HEADERS,
    PATH,
    ROOT,
    available,
    free_port,
    host,
    measure_throughput,
    stats_ms,
    stop,
    wait_ready,
)
from gateway_overhead import start_upstream as start_fake_upstream


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces receiver that decodes every export and counts spans."""

    spans = 0
    exports = 0

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        message = ExportTraceServiceRequest()
        message.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).exports += 1
        type(self).spans += sum(
            len(scope.spans) for rs in message.resource_spans for scope in rs.scope_spans
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def start_gateway(
    upstream_url: str,
    tmp: Path,
    name: str,
    traces_url: str | None,
    python_path: str | None = None,
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "modelbench", "gateway", "--upstream"]
    command += [f"m={upstream_url}/v1", "--port", str(port), "--registry", "file"]
    command += ["--log-level", "warning", "--log-format", "text"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_EXPORTER_OTLP") and k != "OTEL_SDK_DISABLED"
    }
    env |= {
        "MODELBENCH_DATABASE_URL": f"sqlite:///{tmp / f'{name}.db'}",
        "MODELBENCH_KEYS_FILE": str(tmp / "keys.json"),
    }
    if traces_url is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = traces_url
    if python_path is not None:  # another checkout's python/ first: the build without tracing
        env["PYTHONPATH"] = os.pathsep.join([python_path, env.get("PYTHONPATH", "")])
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, ("/health", "/ready"), f"the gateway ({name})")
    except BaseException:
        process.kill()
        raise
    return process, url


def measure_latency(urls: dict[str, str], num: int, block: int, warmup: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(timeout=30) as client:

        def one(name: str) -> float:
            started = time.perf_counter()
            response = client.post(urls[name] + PATH, content=BODY, headers=HEADERS)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
            return elapsed

        for _ in range(warmup):
            for name in urls:
                one(name)
        while min(len(t) for t in times.values()) < num:
            for name in urls:
                for _ in range(min(block, num - len(times[name]))):
                    times[name].append(one(name))
    out = {name: stats_ms(t) for name, t in times.items()}
    for q in ("p50_ms", "p99_ms", "mean_ms"):
        out[f"on_minus_off_{q}"] = out["on"][q] - out["off"][q]
        if "without" in out:
            out[f"off_minus_without_{q}"] = out["off"][q] - out["without"][q]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per gateway, latency phase")
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10, help="per throughput run")
    parser.add_argument(
        "--baseline-python",
        help="the python/ folder of a checkout from before tracing (git worktree add "
        "/tmp/before 49bbc6e): a third gateway, 'without', runs that code",
    )
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()

    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    traces_url = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    gateways: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory(prefix="tracing-overhead-") as tmp_dir:
        tmp = Path(tmp_dir)
        upstream, upstream_url = start_fake_upstream()
        try:
            urls = {}
            if args.baseline_python:
                gateways["without"], urls["without"] = start_gateway(
                    upstream_url, tmp, "without", None, args.baseline_python
                )
            for name, url in (("off", None), ("on", traces_url)):
                gateways[name], urls[name] = start_gateway(upstream_url, tmp, name, url)
            latency = measure_latency(urls, args.requests, args.block, args.warmup)
            client = "aiohttp" if available("aiohttp") else "httpx"
            spawn = multiprocessing.get_context("spawn")
            runs: dict[str, list[dict]] = {name: [] for name in urls}
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as executor:
                for name in [*urls, *urls]:
                    watched = {"gateway": gateways[name].pid, "upstream": upstream.pid}
                    runs[name].append(
                        measure_throughput(client, urls[name], watched, args, executor, tmp)
                    )
        finally:
            for process in gateways.values():
                stop(process)
            stop(upstream)
    time.sleep(1.0)  # the "on" gateway's last batch
    receiver.shutdown()

    def mean(name: str, key: str) -> float:
        values = [r[key] for r in runs[name] if r[key] is not None]
        return sum(values) / len(values) if values else float("nan")

    rps = {name: mean(name, "requests_per_s") for name in runs}
    cpu = {name: mean(name, "gateway_cpu_ms_per_request") for name in runs}
    result = {
        "benchmark": "tracing_overhead",
        "host": host(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "config": {k: getattr(args, k) for k in ("requests", "block", "warmup", "concurrency")}
        | {"seconds": args.seconds, "client": client},
        "latency": latency,
        "throughput": {"runs": runs, "requests_per_s": rps, "gateway_cpu_ms_per_request": cpu},
        "ratios": {
            "on_vs_off_requests_per_s": rps["on"] / rps["off"],
            "on_vs_off_gateway_cpu_per_request": cpu["on"] / cpu["off"],
            **(
                {
                    "off_vs_without_requests_per_s": rps["off"] / rps["without"],
                    "off_vs_without_gateway_cpu_per_request": cpu["off"] / cpu["without"],
                }
                if "without" in rps
                else {}
            ),
        },
        "baseline_python": args.baseline_python,
        "receiver": {"exports": Receiver.exports, "spans": Receiver.spans},
        "notes": [
            "off is the default: no OTEL endpoint, so the app installs no tracing middleware and "
            "holds no tracer; what remains of tracing on the request path is three `is None` "
            "tests per request (the record's span lookup, the gateway's tracer, the store "
            "writer's tracer), below what this benchmark can resolve: off stands for the build "
            "without tracing",
            "each throughput figure is the mean of two runs per gateway, the gateways "
            "alternating (without, off, on, without, off, on), so all see the same drift of a "
            "shared machine; 'without' (with --baseline-python) is the code from before tracing",
            f"{os.cpu_count()} CPUs shared by the load generator, both gateways (one idle at a "
            "time), the upstream and the receiver: gateway_cpu_ms_per_request is the figure "
            "that does not depend on that",
        ],
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
