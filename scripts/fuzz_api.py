"""Fuzz modelbench's HTTP API from the outside with schemathesis, against
its own OpenAPI spec, and write what it found as JSON.

    python3 scripts/fuzz_api.py [--model PATH] [--max-examples 100] [--out fuzz.json]

Three setups, each a real ``modelbench serve`` on a loopback port with a
store, keys file and model directory of its own:

- ``keys_off``: no API keys (admin routes off, per-address limits);
- ``plain_key``: keys exist, requests carry a plain key (admin routes: 403);
- ``admin_key``: keys exist, requests carry an admin key.

Each runs ``schemathesis run --checks all`` over every operation, in all
four phases (examples, coverage, fuzzing, stateful), with the hooks of
scripts/fuzz_hooks.py (bodies aimed at the served model; the 400s the spec
lists as contextual dropped from "schema-valid request rejected", counted)
and the settings of scripts/fuzz_schemathesis.toml (/ready's 503 is its
answer, not a server error; 180 s for a response; no coverage phase for
admin loads, which it would build without the hooks). Admin loads are aimed
at a path inside the model directory that holds no model, so the fuzz never
loads a real one (tests/python/server/test_admin_loads.py does that).

The summary has, per setup, schemathesis' failures by check, its errors, the
dropped failures by code and the run's time; the exit status is 1 when any
setup had a failure or an error.
tests/python/server/test_schemathesis.py runs it with a few examples.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

SCRIPTS = Path(__file__).resolve().parent
MODEL_NAME = "fuzz-model"
SETUPS = ("keys_off", "plain_key", "admin_key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(root: Path) -> dict[str, str]:
    """A server's own store, keys file and model directory; failed-auth
    throttling set past what the fuzz's probes of wrong keys add up to."""
    (root / "models").mkdir(exist_ok=True)
    return {
        **os.environ,
        "MODELBENCH_DATABASE_URL": f"sqlite:///{root / 'store.db'}",
        "MODELBENCH_KEYS_FILE": str(root / "keys.json"),
        "MODELBENCH_MODEL_DIRS": json.dumps([str(root / "models")]),
        "MODELBENCH_AUTH_MAX_FAILURES": "1000000",
        "HF_HUB_OFFLINE": "1",
    }


def create_key(env: dict[str, str], admin: bool) -> str:
    """A key made by ``modelbench keys create``, as an operator would."""
    command = [sys.executable, "-m", "modelbench.cli.main", "keys", "create", "--name", "fuzz"]
    done = subprocess.run(
        command + (["--admin"] if admin else []), env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"modelbench keys create failed: {done.stderr}")
    lines = done.stdout.splitlines()
    secret = next((line.split(": ", 1)[1] for line in lines if line.startswith("key: ")), None)
    if secret is None:
        raise RuntimeError(f"no key in the output of modelbench keys create: {done.stdout}")
    return secret


def start_server(model: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "modelbench.cli.main",
        "serve",
        "--model",
        model,
        "--served-model-name",
        MODEL_NAME,
        "--max-model-len",
        "256",
        "--kv-cache-memory",
        str(32 * 2**20),
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--drain-timeout",
        "1",
    ]
    server = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"the server was not ready in 180 s: {log.read_text()[-2000:]}")


def run_schemathesis(
    url: str, env: dict[str, str], key: str | None, args: argparse.Namespace, report: Path
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(SCRIPTS / "fuzz_schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(args.max_examples),
        "--phases",
        args.phases,
        "--seed",
        str(args.seed),
        "--workers",
        "1",  # hypothesis' caches are not thread-safe (internal errors with 2)
        "--request-timeout",
        "180",  # past compare's 120 s deadline per model, which bounds the slowest route
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    if key is not None:
        command += ["--header", f"Authorization: Bearer {key}"]
    fuzz_env = {
        **env,
        "MODELBENCH_FUZZ_DROPPED": str(report.parent / "dropped.jsonl"),
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
        "PYTHONPATH": os.pathsep.join([str(SCRIPTS), env.get("PYTHONPATH", "")]),
        "MODELBENCH_FUZZ_MODEL": MODEL_NAME,
        "MODELBENCH_FUZZ_LOAD_PATH": "no-model-here",
    }
    # In the setup's folder: schemathesis and hypothesis keep their caches where they run.
    return subprocess.run(command, env=fuzz_env, capture_output=True, text=True, cwd=report.parent)


def fuzz_setup(setup: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    env = environment(root)
    key = None if setup == "keys_off" else create_key(env, admin=setup == "admin_key")
    port = free_port()
    started = time.monotonic()
    server = start_server(args.model, env, port, root / "server.log")
    try:
        done = run_schemathesis(f"http://127.0.0.1:{port}", env, key, args, root / "report.json")
    finally:
        server.terminate()
        server.wait(timeout=60)
    report_path = root / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {
        "work_dir": str(root),
        "exit_code": done.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "test_cases": report.get("test_cases"),
        "operations": report.get("operations"),
        "phases": report.get("phases"),
        "failures": report.get("failures", []),
        "errors": report.get("errors", []),
        "filtered": report.get("filtered"),
        "dropped_by_code": dropped_by_code(root / "dropped.jsonl"),
        "output_tail": done.stdout[-6000:] if done.returncode != 0 else "",
    }


def dropped_by_code(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            code = json.loads(line)["code"]
            counts[code] = counts.get(code, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default=None,
        help="Hugging Face folder or .gguf to serve (default: the default model)",
    )
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated")
    parser.add_argument("--jobs", type=int, default=1, help="setups fuzzed at once")
    parser.add_argument("--out", type=Path, default=Path("fuzz_api.json"))
    parser.add_argument("--work-dir", type=Path, default=None, help="servers' files and logs")
    args = parser.parse_args(argv)
    if args.model is None:
        from modelbench.models.default_model import default_model_path

        args.model = str(default_model_path())
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fuzz_api-"))
    setups = args.setups.split(",")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = pool.map(lambda setup: fuzz_setup(setup, args, work / setup), setups)
        results = dict(zip(setups, done))
    for setup, result in results.items():
        print(f"{setup}: exit {result['exit_code']}, {result['seconds']} s")
    summary = {
        "max_examples": args.max_examples,
        "phases": args.phases.split(","),
        "seed": args.seed,
        "setups": results,
        "clean": all(r["exit_code"] == 0 for r in results.values()),
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if summary["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
