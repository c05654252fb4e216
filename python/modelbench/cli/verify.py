"""``modelbench verify --model A --model B "prompt" [--tests FILE]``: ask
several models for code through a server's ``POST /v1/verify``, which runs
every answer in its sandbox against the tests; print how each did and the
answer chosen. Exits 0 when an answer was verified, 1 otherwise."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modelbench.cli.compare import add_request_flags, post, request_body


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "verify",
        help="ask several models for code; run each answer in a sandbox; keep what passes",
        description="Without --tests, the prompt's doctest examples (>>> f(1) / 2) are the tests.",
    )
    add_request_flags(p)
    p.add_argument("--tests", type=Path, help="a Python file of asserts or test functions")
    p.add_argument("--entry-point", help="the function the tests check (default: inferred)")
    p.set_defaults(func=run, max_tokens=256)


def run(args: argparse.Namespace) -> None:
    body = request_body(args)
    if args.tests is not None:
        try:
            body["tests"] = args.tests.read_text()
        except OSError as exc:
            raise SystemExit(f"modelbench verify: --tests {args.tests}: {exc.strerror}") from exc
    if args.entry_point:
        body["entry_point"] = args.entry_point
    result = post(args, "verify", body)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_verdict(result)
    raise SystemExit(0 if result["verified"] else 1)


def print_verdict(result: dict[str, Any]) -> None:
    print(
        f"verify {result['verify_id']}: {result['isolation']} sandbox, tests from "
        f"{result['tests_from']}, entry point {result.get('entry_point') or '-'}"
    )
    inputs = (result.get("agreement") or {}).get("inputs", [])
    for r in result["results"]:
        mark = "passed" if r["passed"] else "failed"
        times = ", ".join(
            f"{what} {r[key]:.0f} ms"
            for what, key in (("generated in", "generation_ms"), ("ran in", "run_ms"))
            if r.get(key) is not None
        )
        reason = "" if r["passed"] else f": {r['reason']}"
        print(f"  [{mark}] {r.get('served_by') or r['model']}{reason} ({times or 'not run'})")
        if r.get("extra_outputs"):
            done = [f"{call} {what}" for call, what in zip(inputs, r["extra_outputs"], strict=True)]
            print(f"           on extra inputs: {'; '.join(done)}")
    chosen = result.get("chosen")
    if chosen is None:
        print(f"not verified: {result['reason']}")
        return
    print(f"verified: {chosen['model']} ({result['reason']})")
    print(chosen["code"].rstrip("\n"))
