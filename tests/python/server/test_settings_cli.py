"""Settings from the environment and the `modelbench serve` flags, and the
models file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelbench.cli.main import build_parser, settings_from_args
from modelbench.config import DEFAULT_MODEL_NAME, Settings, load_models_file


def one(settings: Settings):
    """The one language model (the embedding model served beside the default
    chat model is tests/python/server/test_embedding_model.py's)."""
    (config,) = [m for m in settings.model_configs().models if not m.is_embedding_model()]
    return config


def test_served_model_name_defaults() -> None:
    assert one(Settings()).name == DEFAULT_MODEL_NAME
    assert one(Settings()).path is None
    assert one(Settings(model="/models/Qwen2-0.5B/")).name == "Qwen2-0.5B"
    assert one(Settings(model="/m/tiny.Q8_0.gguf")).name == "tiny.Q8_0"
    assert one(Settings(model="/m/x", served_model_name="y")).id == "y:1"


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "MODELBENCH_MODEL": "/m/llama",
        "MODELBENCH_PORT": "9000",
        "MODELBENCH_MAX_MODEL_LEN": "512",
        "MODELBENCH_KV_CACHE_MEMORY": "0.25",
    }.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert (settings.model, settings.port, settings.max_model_len) == ("/m/llama", 9000, 512)
    assert settings.kv_cache_memory == 0.25 and one(settings).name == "llama"
    monkeypatch.setenv("MODELBENCH_KV_CACHE_MEMORY", "1024")
    assert Settings().kv_cache_memory == 1024 and isinstance(Settings().kv_cache_memory, int)
    monkeypatch.setenv("MODELBENCH_PORT", "eighty")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBENCH_HOST", "0.0.0.0")
    monkeypatch.setenv("MODELBENCH_PORT", "7000")
    args = build_parser().parse_args(
        [
            "serve",
            "--model",
            "/m/x",
            "--port",
            "8001",
            "--max-model-len",
            "128",
            "--kv-cache-memory",
            "33554432",
        ]
    )
    assert (args.model, args.port, args.max_model_len, args.kv_cache_memory) == (
        ["/m/x"],
        8001,
        128,
        33554432,
    )
    settings = settings_from_args(args)
    assert settings.port == 8001 and settings.host == "0.0.0.0"  # unset flags leave the env alone
    assert settings.kv_cache_dtype == "auto"


def test_kv_cache_dtype_flag_reaches_the_engine_args() -> None:
    args = build_parser().parse_args(["serve", "--model", "/m/x", "--kv-cache-dtype", "bfloat16"])
    (model,) = settings_from_args(args).model_configs().models
    assert model.kv_cache_dtype == "bfloat16"
    assert model.engine_args().resolved_kv_cache_dtype() == "bfloat16"
    args = build_parser().parse_args(["serve", "--model", "/m/x", "--kv-cache-dtype", "int8"])
    (model,) = settings_from_args(args).model_configs().models
    assert model.engine_args().resolved_kv_cache_dtype() == "int8"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--kv-cache-dtype", "fp8"])


MODELS_TOML = """
[[models]]
name = "chat"
version = "1"
path = "/m/a"
default = true
weight = 90

[[models]]
name = "chat"
version = "2"
path = "/m/b"
weight = 10
tasks = ["generate"]

[routing]
chat = "canary"
"""


def test_models_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(MODELS_TOML)
    parsed = load_models_file(path)
    assert [m.id for m in parsed.models] == ["chat:1", "chat:2"]
    assert parsed.models[1].tasks == ["generate"] and parsed.models[0].weight == 90
    assert parsed.routing == {"chat": "canary"}
    # --model adds one more to those the file declares
    both = Settings(models_file=path, model="/m/c").model_configs()
    assert [m.id for m in both.models] == ["chat:1", "chat:2", "c:1"]
    assert [m.id for m in Settings(models_file=path).model_configs().models] == ["chat:1", "chat:2"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[models]]\nname = 'a'\n[[models]]\nname = 'a'\n", "a:1 is declared twice"),
        ("[[models]]\nname = 'a'\ntasks = ['dance']\n", "models.0.tasks.0"),
        ("[[models]]\nname = 'a:b'\n", "models.0.name"),
        ("[[models]]\nname = 'a'\n[routing]\nb = 'canary'\n", "routing names 'b'"),
        ("[[models]]\nname = 'a'\n[routing]\na = 'random'\n", "routing.a"),
        ("[[models]]\nname = 'a'\nspeed = 3\n", "models.0.speed"),
        ("models = [", "not valid TOML"),
        ("", "declares no [[models]] and no [[upstreams]]"),
        ("[[upstreams]]\nname = 'u'\nurl = 'ftp://x'\n", "upstreams.0.url"),
        (
            "[[upstreams]]\nname = 'u'\nurl = 'http://h/v1'\n[gateway]\nfallback = {u = 'v'}\n",
            "names 'v', which is not served",
        ),
    ],
)
def test_models_file_errors_say_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_models_file(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_models_file(tmp_path / "missing.toml")


def test_serve_takes_several_models() -> None:
    parse = build_parser().parse_args
    args = parse(["serve", "--model", "/m/llama", "--model", "/m/qwen/", "/m/tiny.Q8_0.gguf"])
    assert args.model == ["/m/llama", "/m/qwen/", "/m/tiny.Q8_0.gguf"]
    configs = settings_from_args(args).model_configs().models
    assert [(m.id, m.path) for m in configs] == [
        ("llama:1", "/m/llama"),
        ("qwen:1", "/m/qwen/"),
        ("tiny.Q8_0:1", "/m/tiny.Q8_0.gguf"),
    ]
    named = settings_from_args(
        parse(
            [
                "serve",
                "--model",
                "/m/a",
                "/m/b",
                "--served-model-name",
                "x",
                "--served-model-name",
                "y",
                "--max-model-len",
                "64",
            ]
        )
    )
    assert [(m.id, m.path, m.max_model_len) for m in named.model_configs().models] == [
        ("x:1", "/m/a", 64),
        ("y:1", "/m/b", 64),
    ]
    with pytest.raises(ValueError, match="1 served model names for 2 models"):
        settings_from_args(
            parse(["serve", "--model", "/m/a", "/m/b", "--served-model-name", "x"])
        ).model_configs()
    with pytest.raises(ValueError, match="would be served as b:1, which another model already is"):
        settings_from_args(parse(["serve", "--model", "/m/a/b", "/m/c/b"])).model_configs()


def test_several_models_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBENCH_MODEL", '["/m/a", "/m/b"]')
    assert [m.id for m in Settings().model_configs().models] == ["a:1", "b:1"]


def test_serving_several_models_from_the_command_line(
    tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from ..tiny_models import build_tiny_model
    from .conftest import KV_CACHE_MEMORY, free_port, run_server

    gpt2_path = build_tiny_model("gpt2", tmp_path_factory.mktemp("cli") / "gpt2")
    args = build_parser().parse_args(
        [
            "serve",
            "--model",
            str(tiny_llama_path),
            "--model",
            str(gpt2_path),
            "--port",
            str(free_port()),
            "--max-model-len",
            "128",
            "--kv-cache-memory",
            str(KV_CACHE_MEMORY),
        ]
    )
    with run_server(settings_from_args(args), tiny_llama_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
            assert ids == ["llama", "gpt2", "llama:1", "gpt2:1"]
            for name in ("llama", "gpt2"):
                r = http.post(
                    "/v1/completions",
                    json={"model": name, "prompt": "hi", "max_tokens": 3, "ignore_eos": True},
                )
                assert r.status_code == 200, r.text
                assert (
                    r.json()["model"] == f"{name}:1" and r.json()["usage"]["completion_tokens"] == 3
                )


def test_serve_keeps_the_default_model_beside_upstreams_and_the_gateway_does_not() -> None:
    serve = Settings(upstream=["u=http://127.0.0.1:9/v1#theirs"]).model_configs()
    assert [m.name for m in serve.models] == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
    assert [(u.name, u.url, u.upstream_model) for u in serve.upstreams] == [
        ("u", "http://127.0.0.1:9/v1", "theirs")
    ]
    args = build_parser().parse_args(["gateway", "--upstream", "u=http://127.0.0.1:9/v1"])
    gateway = settings_from_args(args).model_configs()
    assert gateway.models == [] and [u.name for u in gateway.upstreams] == ["u"]
