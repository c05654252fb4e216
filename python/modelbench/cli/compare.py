"""``modelbench compare --model A --model B "prompt"``: the same prompt to
several models through a server's ``POST /v1/compare``, answers side by side
in the terminal (one column per model), with each one's time to first
token, latency, tokens and finish reason, or its error."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("compare", help="ask several models the same thing, side by side")
    add_request_flags(p)
    p.set_defaults(func=run)


def add_request_flags(p: argparse.ArgumentParser) -> None:
    """The prompt, the models and the sampling (``modelbench verify`` takes them too)."""
    p.add_argument("prompt", help="the user message (or, with --completion, the prompt)")
    p.add_argument(
        "--model", action="append", required=True, help="a model to ask; repeat it for each"
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="a modelbench server")
    p.add_argument("--api-key", help="default: MODELBENCH_API_KEY, else OPENAI_API_KEY, else none")
    p.add_argument("--completion", action="store_true", help="a plain prompt, not a chat message")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--deadline", type=float, help="seconds each model may take")
    p.add_argument("--json", action="store_true", help="print the response as JSON")


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "models": args.model,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }
    if args.completion:
        body["prompt"] = args.prompt
    else:
        body["messages"] = [{"role": "user", "content": args.prompt}]
    if args.deadline is not None:
        body["deadline_s"] = args.deadline
    return body


def post(args: argparse.Namespace, command: str, body: dict[str, Any]) -> dict[str, Any]:
    """The server's answer to ``POST /v1/<command>``; an error exits saying what went wrong."""
    key = args.api_key or os.environ.get("MODELBENCH_API_KEY") or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = args.base_url.rstrip("/").removesuffix("/v1") + f"/v1/{command}"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=None)
    except httpx.HTTPError as exc:
        raise SystemExit(f"modelbench {command}: cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        hint = (
            " (set --api-key or MODELBENCH_API_KEY)" if response.status_code in (401, 403) else ""
        )
        raise SystemExit(f"modelbench {command}: HTTP {response.status_code}: {message}{hint}")
    result: dict[str, Any] = response.json()
    return result


def run(args: argparse.Namespace) -> None:
    result = post(args, "compare", request_body(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_side_by_side(result)


def text_of(output: Any) -> str:
    if isinstance(output, dict):
        return str(output.get("content") or "")
    return "" if output is None else str(output)


def print_side_by_side(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compare {result['compare_id']}", show_lines=True, expand=True)
    table.add_column("", style="bold", no_wrap=True)
    rows: dict[str, list[str]] = {k: [] for k in ("answer", "finish", "tokens", "ttft", "latency")}
    for r in result["results"]:
        table.add_column(r.get("served_by") or r["model"], overflow="fold")
        error = r.get("error")
        usage = r.get("usage") or {}
        rows["answer"].append(
            f"[red]{error['message']}[/red]" if error else text_of(r.get("output"))
        )
        rows["finish"].append(r.get("finish_reason") or "-")
        rows["tokens"].append(str(usage.get("completion_tokens", "-")))
        rows["ttft"].append(f"{r['ttft_ms']:.0f} ms" if r.get("ttft_ms") is not None else "-")
        rows["latency"].append(
            f"{r['latency_ms']:.0f} ms" if r.get("latency_ms") is not None else "-"
        )
    for name, cells in rows.items():
        table.add_row(name, *cells)
    Console(file=sys.stdout).print(table)
