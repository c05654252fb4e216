"""ServerSettings: what the server serves and where it listens."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelbench.engine_args import EngineArgs

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
ENV_PREFIX = "MODELBENCH_"


def parse_memory(value: str) -> int | float:
    """Bytes as an integer ("33554432") or a fraction of available memory ("0.25")."""
    try:
        return int(value)
    except ValueError:
        return float(value)


@dataclass
class ServerSettings:
    """One model served on one address.

    ``model=None`` serves the default model. ``served_model_name`` is the name
    clients put in ``"model"``; by default the model folder's name.
    """

    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    max_model_len: int | None = None
    kv_cache_memory: int | float | None = None

    def __post_init__(self) -> None:
        if self.served_model_name is None:
            if self.model is None:
                self.served_model_name = DEFAULT_MODEL_NAME
            else:
                path = Path(str(self.model).rstrip("/"))
                self.served_model_name = path.stem if path.suffix == ".gguf" else path.name

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Read ``MODELBENCH_MODEL``, ``MODELBENCH_HOST``, ``MODELBENCH_PORT``,
        ``MODELBENCH_SERVED_MODEL_NAME``, ``MODELBENCH_MAX_MODEL_LEN`` and
        ``MODELBENCH_KV_CACHE_MEMORY``; unset ones keep their defaults."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value else None

        kwargs: dict[str, object] = {}
        for name, parse in [
            ("model", str), ("host", str), ("port", int), ("served_model_name", str),
            ("max_model_len", int), ("kv_cache_memory", parse_memory),
        ]:
            raw = get(name.upper())
            if raw is not None:
                try:
                    kwargs[name] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not valid: {exc}") from exc
        return cls(**kwargs)  # type: ignore[arg-type]

    def engine_args(self) -> EngineArgs:
        return EngineArgs(
            model=self.model, max_model_len=self.max_model_len, kv_cache_memory=self.kv_cache_memory,
        )
