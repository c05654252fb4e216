"""Soak: a real `modelbench serve` under a steady mixed load for ten minutes
(by default), watched from outside for leaks.

It starts the server on 127.0.0.1 only (a free port, a fresh SQLite store, an
empty keys file) and drives it with --concurrency closed-loop clients over a
fixed mix: chat and completions, streamed and not; streams the client cuts
off after two events; eight kinds of bad request (400, 404, 415); and a
batch of jobs every --batch-every-s. Every few seconds it reads RSS, threads
and open fds (/proc/<pid>) and KV blocks held and asyncio tasks (/metrics).
After --warmup-s and after the steady phase it lets the server go idle for
a sample; then it checks the request log against its own ledger.

Verdicts (_soak_judge.py; docs/reliability.md has the last run): RSS slope
over the steady phase under --max-rss-slope-mb-per-min; no growth of KV
blocks, fds or tasks between the two idle samples; every request answered
as its kind must be; every accepted request and batch job attempt recorded
exactly once. Writes JSON (--out) and a plot (--plot); exits 1 on a failure.

    python3 benchmarks/soak.py --out benchmarks/results/soak_cpu.json \\
        --plot docs/reliability_soak.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from _report import emit, free_port  # benchmarks/_report.py (this folder is on sys.path)
from _soak_judge import Ledger, Sent, check_records, judge, plot

HOST = "127.0.0.1"  # loopback only: the soak's server is open (no keys) and stores prompts
PROMPTS = [
    "Write one sentence about the sea.",
    "List three colours.",
    "What is two plus two?",
    "Name a city in France and say why it is known.",
    "Describe a cat in five words.",
]
# name -> weight in the mix; "batch" runs beside them on its own client
MIX = {"chat": 3, "chat_stream": 3, "completion": 2, "completion_stream": 2}
MIX |= {"cancelled": 2, "bad": 2}
BAD: list[
    tuple[dict[str, Any], int]
] = [  # (what changes in a good chat body, the status it must get); "" drops the field
    ({"temperature": -1}, 400),
    ({"max_tokens": 0}, 400),
    ({"max_tokens": 10**8}, 400),  # past the context: the numbers in the message
    ({"max_tokens": "4"}, 400),  # a number sent as a string
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400),  # not a role of the template
    ({"messages": ""}, 400),
    ({"model": "no-such-model"}, 404),
    ({"content-type": "text/plain"}, 415),  # the body is JSON, the header says otherwise
]


def host_cpu() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class Server:
    """`python -m modelbench serve` in a subprocess, its output in a log file."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        command = [sys.executable, "-m", "modelbench", "serve", "--host", HOST]
        command += ["--port", str(self.port), "--log-level", "warning", "--log-format", "text"]
        command += ["--database-url", f"sqlite:///{tmp / 'soak.db'}"]
        for flag in ("model", "max_model_len", "kv_cache_memory"):
            value = getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        env = {**os.environ, "MODELBENCH_KEYS_FILE": str(tmp / "keys.json")}
        self.log = tmp / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        self.pid = self.process.pid

    def wait_ready(self, timeout_s: float) -> str:
        """Wait for /ready (models loaded, store migrated); the model's name."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                ready = httpx.get(self.url + "/ready", timeout=2)
                if ready.status_code == 200 and ready.json().get("store") == "ready":
                    return httpx.get(self.url + "/v1/models", timeout=5).json()["data"][0]["id"]
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become ready; its log ends:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        """SIGTERM (the server drains), then SIGKILL if it takes too long."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode


def read_proc(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


async def read_metrics(url: str) -> dict[str, float | None]:
    """What /metrics says of KV use, tasks and requests (summed over versions)."""
    wanted = {
        "modelbench:kv_cache_usage_perc": "kv_usage",
        "modelbench:event_loop_tasks": "tasks",
        "modelbench:num_requests_running": "running",
        "modelbench:num_requests_waiting": "waiting",
        "modelbench:request_records_buffered": "records_buffered",
        "modelbench:request_records_dropped": "records_dropped",
    }
    # A connection of its own, closed after the scrape: never one of the load's.
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(url + "/metrics")).text
    found: dict[str, float | None] = dict.fromkeys(wanted.values())
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            key = wanted.get(metric.name) or wanted.get(metric.name.removesuffix("_total"))
            if key is not None:
                found[key] = (found[key] or 0.0) + metric.value
    return found


async def sample(server: Server, started: float, phase: str) -> dict:
    proc = read_proc(server.pid)  # before the scrape opens its connection
    return {
        "t_s": round(time.monotonic() - started, 2),
        "phase": phase,
        **proc,
        **await read_metrics(server.url),
    }


async def two_chunks(response: httpx.Response) -> bool:
    """Read a stream's first two events; False when it ends before them."""
    chunks = 0
    async for line in response.aiter_lines():
        chunks += line.startswith("data: ") and line != "data: [DONE]"
        if chunks == 2:
            return True
    return False


@dataclass
class Request:
    path: str
    body: dict
    status: int  # the status it must get
    record_status: str  # and the status its record must have
    content_type: str = "application/json"


class Load:
    """The clients of one phase: closed loops over the mix until a deadline."""

    def __init__(self, server: Server, model: str, args: argparse.Namespace, ledger: Ledger):
        self.server, self.model, self.args, self.ledger = server, model, args, ledger
        self.random = random.Random(args.seed)

    def request(self, kind: str, n: int) -> Request:
        """Request ``n`` of ``kind``, and what it must get."""
        prompt = f"{PROMPTS[n % len(PROMPTS)]} ({n})"
        tokens = self.args.max_tokens
        chat: dict[str, Any] = {"model": self.model, "max_tokens": tokens, "seed": n}
        chat |= {"messages": [{"role": "user", "content": prompt}], "temperature": 0.7}
        if kind.startswith("completion"):
            body = {"model": self.model, "prompt": prompt, "max_tokens": tokens, "seed": n}
            body["stream"] = kind == "completion_stream"
            return Request("/v1/completions", body, 200, "succeeded")
        if kind == "cancelled":  # long enough to be cut off, whatever EOS the model likes
            body = chat | {"stream": True, "max_tokens": 4 * tokens, "ignore_eos": True}
            return Request("/v1/chat/completions", body, 200, "aborted")
        if kind == "bad":
            bad, status = BAD[n % len(BAD)]
            change = dict(bad)
            content_type = change.pop("content-type", "application/json")
            body = {k: v for k, v in (chat | change).items() if v != ""}
            return Request("/v1/chat/completions", body, status, "failed", content_type)
        body = chat | {"stream": kind == "chat_stream"}
        return Request("/v1/chat/completions", body, 200, "succeeded")

    async def send(self, client: httpx.AsyncClient, kind: str, n: int) -> None:
        request = self.request(kind, n)
        sent = Sent(kind, f"soak-{kind}-{n}", request.status, request.record_status)
        headers = {"x-request-id": sent.request_id, "content-type": request.content_type}
        content = json.dumps(request.body).encode()
        try:
            async with client.stream(
                "POST", request.path, content=content, headers=headers
            ) as response:
                sent.status = response.status_code
                sent.record_id = response.headers.get("x-modelbench-record-id")
                if kind == "cancelled":
                    sent.ok = response.status_code == request.status and await two_chunks(response)
                    # leaving the block unread closes the connection mid-stream
                else:
                    await response.aread()
                    sent.ok = response.status_code == request.status and (
                        not request.body.get("stream") or b"data: [DONE]" in response.content
                    )
        except httpx.HTTPError as exc:
            sent.error = f"{type(exc).__name__}: {exc}"
        self.ledger.sent.append(sent)

    async def client_loop(self, deadline: float) -> None:
        kinds, weights = list(MIX), list(MIX.values())
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=self.server.url, timeout=self.args.request_timeout_s, limits=limits
        ) as client:
            while time.monotonic() < deadline:
                kind = self.random.choices(kinds, weights)[0]
                await self.send(client, kind, self.ledger.next_number())
                await asyncio.sleep(self.args.think_s)

    async def batch_loop(self, deadline: float) -> None:
        """A batch every --batch-every-s, each polled until it is done (so the
        phase ends with none running)."""
        async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as client:
            while time.monotonic() < deadline:
                started = time.monotonic()
                await self.run_batch(client)
                next_batch = min(started + self.args.batch_every_s, deadline)
                await asyncio.sleep(max(0.0, next_batch - time.monotonic()))

    async def run_batch(self, client: httpx.AsyncClient) -> None:
        requests = []
        for _ in range(self.args.batch_size):
            n = self.ledger.next_number()
            body = self.request("chat", n).body
            url = "/v1/chat/completions"
            requests.append({"custom_id": f"soak-batch-{n}", "url": url, "body": body})
        created = await client.post("/v1/batch", json={"requests": requests})
        if created.status_code != 202:
            self.ledger.batch_errors.append(f"POST /v1/batch: {created.status_code} {created.text}")
            return
        batch_id = created.json()["id"]
        give_up = time.monotonic() + self.args.request_timeout_s
        while (state := (await client.get(f"/v1/batch/{batch_id}")).json())["status"] not in (
            "completed",
            "cancelled",
        ):
            if time.monotonic() > give_up:
                self.ledger.batch_errors.append(f"batch {batch_id} still {state['status']}")
                break
            await asyncio.sleep(0.5)
        results = await client.get(f"/v1/batch/{batch_id}/results")
        jobs = [json.loads(line) for line in results.text.splitlines() if line.strip()]
        self.ledger.jobs += [
            {"id": j["id"], "batch_id": batch_id, "status": j["status"], "attempts": j["attempts"]}
            for j in jobs
        ]

    async def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        clients = [self.client_loop(deadline) for _ in range(self.args.concurrency)]
        await asyncio.gather(*clients, self.batch_loop(deadline))


async def settle(server: Server, started: float, phase: str, timeout_s: float = 60) -> dict:
    """Wait until nothing runs or waits and every record is written, then a
    moment for closed connections to be let go; the idle sample."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = await read_metrics(server.url)
        if not (m["running"] or m["waiting"] or m["records_buffered"]):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)
    return await sample(server, started, phase)


async def soak(server: Server, model: str, args: argparse.Namespace) -> dict:
    ledger = Ledger()
    load = Load(server, model, args, ledger)
    samples: list[dict] = []
    started = time.monotonic()

    async def watch(phase: str) -> None:
        while True:
            samples.append(await sample(server, started, phase))
            await asyncio.sleep(args.sample_every_s)

    async def phase(name: str, seconds: float) -> tuple[float, float]:
        watching = asyncio.create_task(watch(name))
        begin = time.monotonic() - started
        await load.run(seconds)
        end = time.monotonic() - started
        watching.cancel()  # no scrape of its own in the idle sample
        await asyncio.gather(watching, return_exceptions=True)
        samples.append(await settle(server, started, "idle"))
        return begin, end

    warmup = await phase("warmup", args.warmup_s)
    idle_start = samples[-1]
    steady = await phase("steady", args.duration_s - args.warmup_s)
    idle_end = samples[-1]
    records = await check_records(server.url, ledger)
    return {
        "samples": samples,
        "steady_s": [round(steady[0], 2), round(steady[1], 2)],
        "load_s": round(warmup[1] - warmup[0] + steady[1] - steady[0], 2),
        "idle": {"start": idle_start, "end": idle_end},
        "ledger": ledger,
        "records": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600, help="load, warm-up included")
    parser.add_argument("--warmup-s", type=float, default=120, help="left out of the slopes")
    parser.add_argument("--model", help="folder or .gguf (default: the default model)")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--kv-cache-memory", help="bytes, or a fraction of available memory")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop clients (1-64)")
    parser.add_argument("--think-s", type=float, default=0.05, help="pause between requests")
    parser.add_argument("--max-tokens", type=int, default=16, help="per request (x4 cancelled)")
    parser.add_argument("--batch-every-s", type=float, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sample-every-s", type=float, default=5)
    parser.add_argument("--request-timeout-s", type=float, default=120)
    parser.add_argument("--max-rss-slope-mb-per-min", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--plot", help="write the PNG of RSS and KV use over time here")
    args = parser.parse_args()
    if not 1 <= args.concurrency <= 64:
        parser.error(f"--concurrency must be 1 to 64, got {args.concurrency}")
    if not 0 < args.warmup_s < args.duration_s:
        parser.error(f"--warmup-s must be above 0 and under --duration-s ({args.duration_s})")

    with tempfile.TemporaryDirectory(prefix="modelbench-soak-") as tmp:
        server = Server(args, Path(tmp))
        try:
            model = server.wait_ready(600)
            run = asyncio.run(
                asyncio.wait_for(soak(server, model, args), 2 * args.duration_s + 300)
            )
        finally:
            exit_code = server.stop()
            log_tail = server.tail()
    ledger: Ledger = run.pop("ledger")
    result = {
        "benchmark": "soak",
        "host": host_cpu(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "plot")}
        | {"model_served": model, "mix": MIX},
        "server_exit_code": exit_code,
        **judge(run, ledger, args.max_rss_slope_mb_per_min),
        "samples": run["samples"],
        "jobs": ledger.jobs,
        "unexpected_requests": [asdict(s) for s in ledger.sent if not s.ok][:50],
    }
    if exit_code != 0:
        result["server_log_tail"] = log_tail
    if args.plot:
        plot(result, args.plot)
    emit(result, args.out)
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
