"""ServerSettings from the environment and the `modelbench serve` flags."""

from __future__ import annotations

import pytest

from modelbench.cli import build_parser
from modelbench.server.settings import DEFAULT_MODEL_NAME, ServerSettings


def test_served_model_name_defaults() -> None:
    assert ServerSettings().served_model_name == DEFAULT_MODEL_NAME
    assert ServerSettings(model="/models/Qwen2-0.5B/").served_model_name == "Qwen2-0.5B"
    assert ServerSettings(model="/m/tiny.Q8_0.gguf").served_model_name == "tiny.Q8_0"
    assert ServerSettings(model="/m/x", served_model_name="y").served_model_name == "y"


def test_from_env() -> None:
    settings = ServerSettings.from_env({
        "MODELBENCH_MODEL": "/m/llama", "MODELBENCH_PORT": "9000",
        "MODELBENCH_MAX_MODEL_LEN": "512", "MODELBENCH_KV_CACHE_MEMORY": "0.25",
        "UNRELATED": "1",
    })
    assert (settings.model, settings.port, settings.max_model_len) == ("/m/llama", 9000, 512)
    assert settings.kv_cache_memory == 0.25 and settings.served_model_name == "llama"
    assert ServerSettings.from_env({"MODELBENCH_KV_CACHE_MEMORY": "1024"}).kv_cache_memory == 1024
    with pytest.raises(ValueError, match="MODELBENCH_PORT"):
        ServerSettings.from_env({"MODELBENCH_PORT": "eighty"})


def test_serve_flags() -> None:
    args = build_parser().parse_args(
        ["serve", "--model", "/m/x", "--port", "8001", "--max-model-len", "128",
         "--kv-cache-memory", "33554432"])
    assert (args.model, args.port, args.max_model_len, args.kv_cache_memory) == ("/m/x", 8001, 128, 33554432)
    assert args.host is None  # unset flags leave the environment's value alone
