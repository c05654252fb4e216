"""modelbench._core.InvalidArgument: a ValueError that names the offending field in ``param``."""

from __future__ import annotations

import pytest

from modelbench import SamplingParams, _core

from .fake_runner import FakeRunner


def test_invalid_argument_is_a_value_error_with_param() -> None:
    assert issubclass(_core.InvalidArgument, ValueError)
    params = _core.SamplingParams()
    params.max_tokens = 0
    with pytest.raises(_core.InvalidArgument) as raised:
        params.validate()
    assert isinstance(raised.value, ValueError)
    assert raised.value.param == "max_tokens"
    assert str(raised.value) == "max_tokens must be >= 1, got 0"  # the message is unchanged


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -1.0), ("top_p", 0.0), ("min_p", 1.5), ("top_k", -2), ("logprobs", -3)],
)
def test_each_sampling_field_is_named(field: str, value: float) -> None:
    params = _core.SamplingParams()
    setattr(params, field, value)
    with pytest.raises(_core.InvalidArgument) as raised:
        params.validate()
    assert raised.value.param == field
    assert str(raised.value).startswith(f"{field} must be")


def test_the_python_sampling_params_raise_it_through_to_core() -> None:
    with pytest.raises(_core.InvalidArgument) as raised:
        SamplingParams(top_p=0.0)
    assert raised.value.param == "top_p"


def test_engine_config_and_requests_name_the_field() -> None:
    config = _core.EngineConfig()
    config.cache.num_blocks = 64
    config.scheduler.max_model_len = 128
    config.vocab_size = 100
    config.scheduler.max_num_seqs = 0
    with pytest.raises(_core.InvalidArgument) as raised:
        config.validate()
    assert raised.value.param == "max_num_seqs"
    config.scheduler.max_num_seqs = 8
    engine = _core.Engine(config, FakeRunner(config.cache.num_blocks, config.cache.block_size))
    ok = _core.SamplingParams()
    for prompt in (
        [],
        [1] * 129,
        [1, 100],
    ):  # empty, longer than max_model_len, outside the vocabulary
        with pytest.raises(_core.InvalidArgument) as raised:
            engine.add_request("a", prompt, ok)
        assert raised.value.param == "prompt"
    with pytest.raises(_core.InvalidArgument) as raised:
        engine.add_request("", [1], ok)
    assert raised.value.param == "request_id"


def test_dtype_names_the_field_it_came_from() -> None:
    with pytest.raises(_core.InvalidArgument, match="dtype must be one of") as raised:
        _core.KVCacheSpec(num_layers=1, num_kv_heads=1, head_dim=8, dtype="float8")
    assert raised.value.param == "dtype"


def test_param_is_none_when_no_single_field_is_at_fault() -> None:
    assert _core.InvalidArgument("anything").param is None
    spec = _core.ModelSpec()
    spec.architecture = "gpt2"
    for name in (
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "head_dim",
        "intermediate_size",
        "max_position_embeddings",
    ):
        setattr(spec, name, 8)
    spec.num_kv_heads = (
        4  # gpt2 needs num_kv_heads == num_heads and head_dim * num_heads == hidden_size
    )
    with pytest.raises(_core.InvalidArgument, match="gpt2 needs") as raised:
        spec.validate()
    assert raised.value.param is None
