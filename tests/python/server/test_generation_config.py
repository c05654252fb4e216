"""The server's default sampling comes from the model (``--generation-config
auto``), ``vllm`` restores neutral defaults, overrides go on top, and a
request's own values always win."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from modelbench.cli.main import build_parser, settings_from_args
from modelbench.config import Settings

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, free_port, run_server

MODEL = "gen"
CHAT = {"messages": [{"role": "user", "content": "Tell me a story."}], "ignore_eos": True}


@pytest.fixture(scope="module")
def greedy_path(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, its generation_config.json asking for greedy and 5 tokens."""
    path = tmp_path_factory.mktemp("genconf") / "llama"
    shutil.copytree(tiny_llama_path, path)
    config = json.loads((path / "generation_config.json").read_text())
    config.update(do_sample=False, max_new_tokens=5)
    (path / "generation_config.json").write_text(json.dumps(config))
    return path


def serve(path: Path, **settings: object):
    return run_server(
        Settings(
            model=str(path),
            served_model_name=MODEL,
            port=free_port(),
            max_model_len=MAX_MODEL_LEN,
            kv_cache_memory=KV_CACHE_MEMORY,
            **settings,
        ),
        path,
    )


def post(base: str, path: str, body: dict) -> dict:
    r = httpx.post(base + path, json={"model": MODEL, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_models_generation_config_fills_what_a_request_leaves_out(greedy_path: Path) -> None:
    with serve(greedy_path) as server:
        base = server.base_url
        assert server.registry.resolve(MODEL).engine.sampling_defaults == {
            "temperature": 0.0,
            "max_tokens": 5,
        }
        answers = [post(base, "/v1/chat/completions", CHAT) for _ in range(3)]
        texts = {a["choices"][0]["message"]["content"] for a in answers}
        assert len(texts) == 1  # greedy: the same answer every time
        assert answers[0]["usage"]["completion_tokens"] == 5  # max_new_tokens
        explicit = post(base, "/v1/chat/completions", {**CHAT, "temperature": 0, "max_tokens": 5})
        assert explicit["choices"][0]["message"]["content"] in texts
        # The request's own values win.
        longer = post(base, "/v1/chat/completions", {**CHAT, "max_completion_tokens": 9})
        assert longer["usage"]["completion_tokens"] == 9
        sampled = [
            post(base, "/v1/chat/completions", {**CHAT, "temperature": 1.5, "seed": s})
            for s in range(4)
        ]
        assert len({a["choices"][0]["message"]["content"] for a in sampled}) > 1
        completion = post(base, "/v1/completions", {"prompt": "Once", "ignore_eos": True})
        assert completion["usage"]["completion_tokens"] == 5  # not OpenAI's 16
        task = post(base, "/v1/infer", {"text": "Once", "parameters": {"ignore_eos": True}})
        assert task["metadata"]["completion_tokens"] == 128  # the task's own bound wins


def test_vllm_mode_is_neutral_and_overrides_go_on_top(greedy_path: Path) -> None:
    with serve(greedy_path, generation_config="vllm") as server:
        assert server.registry.resolve(MODEL).engine.sampling_defaults == {}
        completion = post(
            server.base_url, "/v1/completions", {"prompt": "Once", "ignore_eos": True}
        )
        assert completion["usage"]["completion_tokens"] == 16  # OpenAI's default
    with serve(greedy_path, override_generation_config={"max_new_tokens": 7}) as server:
        assert server.registry.resolve(MODEL).engine.sampling_defaults == {
            "temperature": 0.0,
            "max_tokens": 7,
        }
        chat = post(server.base_url, "/v1/chat/completions", CHAT)
        assert chat["usage"]["completion_tokens"] == 7


def test_the_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--generation-config",
            "vllm",
            "--override-generation-config",
            '{"temperature": 0.5, "max_new_tokens": 64}',
        ]
    )
    settings = settings_from_args(args)
    assert settings.generation_config == "vllm"
    assert settings.override_generation_config == {"temperature": 0.5, "max_new_tokens": 64}
    config = settings.model_configs().models[0]
    assert config.engine_args().override_generation_config == settings.override_generation_config


def test_a_bad_override_is_refused_at_start_naming_it(greedy_path: Path) -> None:
    settings = Settings(
        model=str(greedy_path), port=free_port(), override_generation_config={"temp": 0.5}
    )
    with pytest.raises(ValueError, match="temp, which is not a sampling setting"):
        settings.model_configs().models[0].engine_args()  # checked before any weight is read
