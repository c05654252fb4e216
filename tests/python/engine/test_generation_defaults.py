"""Default sampling from the model (vLLM's --generation-config): a folder's
generation_config.json, "vllm" for neutral defaults, a folder of its own,
overrides on top, and the request's values winning over all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelbench import LLM, SamplingParams
from modelbench.engine.errors import InvalidParameter
from modelbench.models.checkpoint import CheckpointError
from modelbench.models.generation_defaults import from_generation_config, read_generation_config

from ..tiny_models import build_tiny_model

KV = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def sampled_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose generation_config.json asks for sampling settings."""
    path = build_tiny_model("llama_gqa", tmp_path_factory.mktemp("gen") / "llama")
    config = json.loads((path / "generation_config.json").read_text())
    config.update(do_sample=True, temperature=0.6, top_p=0.8, top_k=20, max_new_tokens=7)
    (path / "generation_config.json").write_text(json.dumps(config))
    return path


def test_generation_config_fields_map_to_sampling_params() -> None:
    config = {
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 50,
        "min_p": 0.1,
        "repetition_penalty": 1.05,
        "max_new_tokens": 256,
        "bos_token_id": 1,  # not a sampling setting: ignored
    }
    assert from_generation_config(config, "g.json") == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 50,
        "min_p": 0.1,
        "repetition_penalty": 1.05,
        "max_tokens": 256,
    }


def test_do_sample_false_written_out_is_greedy() -> None:
    # transformers' generate() ignores temperature/top_p/top_k without do_sample.
    config = {"do_sample": False, "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 10}
    assert from_generation_config(config, "g.json") == {"temperature": 0.0, "max_tokens": 10}
    assert from_generation_config({"temperature": 0.6}, "g.json") == {"temperature": 0.6}


def test_a_bad_generation_config_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text('{"temperature": "hot"}')
    with pytest.raises(CheckpointError, match=r"generation_config.json: temperature must be"):
        read_generation_config(tmp_path)
    (tmp_path / "generation_config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="must hold a JSON object"):
        read_generation_config(tmp_path)
    assert read_generation_config(tmp_path / "missing") == {}


def test_llm_samples_with_the_models_defaults(sampled_path: Path) -> None:
    llm = LLM(str(sampled_path), max_model_len=128, kv_cache_memory=KV)
    defaults = llm.get_default_sampling_params()
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (0.6, 0.8, 20)
    assert defaults.max_tokens == 7  # max_new_tokens
    out = llm.generate("Hello", use_tqdm=False)[0].outputs[0]
    assert len(out.token_ids) <= 7
    # Explicit SamplingParams are used as given, as in vLLM.
    explicit = llm.generate("Hello", SamplingParams(max_tokens=11, ignore_eos=True), use_tqdm=False)
    assert len(explicit[0].outputs[0].token_ids) == 11


def test_vllm_mode_gives_neutral_defaults_and_overrides_go_on_top(sampled_path: Path) -> None:
    neutral = LLM(
        str(sampled_path), max_model_len=128, kv_cache_memory=KV, generation_config="vllm"
    )
    assert neutral.get_default_sampling_params() == SamplingParams()
    tuned = LLM(
        str(sampled_path),
        max_model_len=128,
        kv_cache_memory=KV,
        override_generation_config={"temperature": 0.0, "max_new_tokens": 3},
    )
    params = tuned.get_default_sampling_params()
    assert (params.temperature, params.top_p, params.max_tokens) == (0.0, 0.8, 3)


def test_generation_config_from_another_folder(sampled_path: Path, tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text('{"temperature": 0.3, "do_sample": true}')
    llm = LLM(
        str(sampled_path), max_model_len=128, kv_cache_memory=KV, generation_config=str(tmp_path)
    )
    assert llm.sampling_defaults == {"temperature": 0.3}


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        (
            {"generation_config": "nowhere"},
            "generation_config",
            "must be 'auto', 'vllm' or a folder",
        ),
        (
            {"override_generation_config": {"temprature": 1.0}},
            "override_generation_config",
            "temprature",
        ),
        ({"override_generation_config": {"top_p": 0.0}}, "override_generation_config", "top_p"),
    ],
)
def test_bad_generation_config_settings_are_named(
    sampled_path: Path, kwargs: dict, param: str, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message) as info:
        LLM(str(sampled_path), max_model_len=128, kv_cache_memory=KV, **kwargs)
    assert info.value.param == param
