"""The ``modelbench`` command line: ``modelbench serve --model PATH``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from modelbench.server.settings import ENV_PREFIX, ServerSettings, parse_memory


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from modelbench.server.app import create_app

    # Flags override the environment: fold them into it and read it once.
    env = dict(os.environ)
    for name in ("model", "host", "port", "served_model_name", "max_model_len", "kv_cache_memory"):
        value = getattr(args, name)
        if value is not None:
            env[ENV_PREFIX + name.upper()] = str(value)
    settings = ServerSettings.from_env(env)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelbench")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("--model", help="Hugging Face folder or .gguf file (default: SmolLM2-135M-Instruct)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--served-model-name", help="the name clients send as 'model'")
    p.add_argument("--max-model-len", type=int, help="prompt + output tokens of one sequence")
    p.add_argument("--kv-cache-memory", type=parse_memory,
                   help="KV cache budget: bytes, or a fraction of available memory like 0.25")
    p.set_defaults(func=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
