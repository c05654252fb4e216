"""The C++ models against transformers, through the real engine path.

Every test drives ``_core.TransformerRunner`` (mostly inside ``_core.Engine``)
on tiny random-weight checkpoints from ``tiny_models`` and compares with the
Hugging Face model of the same folder (float32, eager attention). Logits come
from ``_core.testing.set_record_logits``: the logits of every token the
engine's own paged forward computed, so chunked prefill, prefix caching and
preemption all sit between the two sides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from modelbench import _core
from modelbench.models import load_checkpoint
from modelbench.models.spec import model_spec_from_hf_config

from ..tiny_models import TINY_KINDS, build_tiny_model, load_reference_model

BLOCK_SIZE = 16
MAX_MODEL_LEN = 340  # prompts up to 300 tokens plus 32 generated
EOS_TOKEN_ID = 2


@dataclass
class TinyModel:
    spec: _core.ModelSpec
    weights: dict[str, torch.Tensor]
    reference: PreTrainedModel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """``tiny(kind)``: spec, weights and transformers model of a tiny checkpoint, built once."""
    root = tmp_path_factory.mktemp("parity_models")
    built: dict[str, TinyModel] = {}

    def get(kind: str) -> TinyModel:
        if kind not in built:
            positions = {"n_positions": 512} if kind == "gpt2" else {"max_position_embeddings": 512}
            # Ten times the usual init scale: attention is then sharp rather
            # than near-uniform, so position, rotary and mask errors show.
            path = build_tiny_model(kind, Path(root) / kind, initializer_range=0.2, **positions)
            checkpoint = load_checkpoint(path)
            reference = load_reference_model(path)
            # Like ignore_eos: generate always makes max_new_tokens.
            reference.generation_config.eos_token_id = None
            built[kind] = TinyModel(
                model_spec_from_hf_config(checkpoint.hf_config), checkpoint.weights, reference
            )
        return built[kind]

    return get


def make_config(
    vocab_size: int,
    num_blocks: int = 64,
    max_num_batched_tokens: int = 64,
    prefix_caching: bool = True,
) -> _core.EngineConfig:
    config = _core.EngineConfig()
    config.cache.block_size = BLOCK_SIZE
    config.cache.num_blocks = num_blocks
    config.cache.enable_prefix_caching = prefix_caching
    config.scheduler.max_num_batched_tokens = max_num_batched_tokens
    config.scheduler.max_num_seqs = 8
    config.scheduler.max_model_len = MAX_MODEL_LEN
    config.vocab_size = vocab_size
    config.eos_token_id = EOS_TOKEN_ID
    return config


def greedy(max_tokens: int, **fields: int) -> _core.SamplingParams:
    params = _core.SamplingParams()
    params.temperature = 0.0
    params.max_tokens = max_tokens
    params.ignore_eos = True
    for name, value in fields.items():
        setattr(params, name, value)
    return params


def random_prompt(rng: random.Random, length: int, vocab_size: int) -> list[int]:
    return [rng.randrange(vocab_size) for _ in range(length)]


def run_engine(
    engine: _core.Engine,
    runner: _core.TransformerRunner,
    prompts: dict[str, list[int]],
    params: _core.SamplingParams,
) -> tuple[dict[str, list[int]], dict[str, dict[int, torch.Tensor]], dict[str, list]]:
    """Per request: generated tokens, recorded logits (position -> [vocab]), RequestOutputs."""
    for request_id, prompt in prompts.items():
        engine.add_request(request_id, prompt, params)
    tokens: dict[str, list[int]] = {request_id: [] for request_id in prompts}
    logits: dict[str, dict[int, torch.Tensor]] = {request_id: {} for request_id in prompts}
    outputs: dict[str, list] = {request_id: [] for request_id in prompts}
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens[out.request_id] += out.new_token_ids
            outputs[out.request_id].append(out)
        for recorded in _core.testing.recorded_logits(runner):
            for row in range(recorded.logits.shape[0]):
                position = recorded.first_position + row
                logits[recorded.request_id][position] = recorded.logits[row].clone()
    return tokens, logits, outputs


def reference_logits(model: PreTrainedModel, token_ids: list[int]) -> torch.Tensor:
    """[len(token_ids), vocab_size] logits of the transformers model, teacher-forced."""
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float()


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_logits_match_transformers(tiny, kind: str) -> None:
    model = tiny(kind)
    vocab_size = model.spec.vocab_size
    rng = random.Random(1)
    prompts = {
        "long": random_prompt(rng, 150, vocab_size),
        "short": random_prompt(rng, 37, vocab_size),
    }
    # No prefix caching: every prompt position is computed, so every one is compared.
    config = make_config(vocab_size, prefix_caching=False)
    runner = _core.TransformerRunner(model.spec, model.weights, config)
    _core.testing.set_record_logits(runner, True)
    engine = _core.Engine(config, runner)
    tokens, logits, _ = run_engine(engine, runner, prompts, greedy(32))

    for request_id, prompt in prompts.items():
        assert len(tokens[request_id]) == 32
        sequence = prompt + tokens[request_id]
        # The last generated token is never fed back, so it has no logits.
        assert sorted(logits[request_id]) == list(range(len(sequence) - 1))
        ours = torch.stack([logits[request_id][p] for p in range(len(sequence) - 1)])
        expected = reference_logits(model.reference, sequence)[:-1]
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def assert_same_greedy(request_id: str, ours: list[int], theirs: list[int], step_logits) -> None:
    """Token-for-token equality, except where transformers' top two logits tie within 1e-4.

    Past such a near-tie the two continuations legitimately diverge, so the
    comparison stops there.
    """
    assert len(ours) == len(theirs), request_id
    for step, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            scores = step_logits[step][0].float()
            gap = (scores[b] - scores[a]).item()
            assert gap < 1e-4, (
                f"{request_id} step {step}: we chose {a}, transformers {b} (logit gap {gap:.2e})"
            )
            return


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_greedy_matches_generate_with_caching_chunking_and_preemption(tiny, kind: str) -> None:
    model = tiny(kind)
    vocab_size = model.spec.vocab_size
    rng = random.Random(2)
    shared = random_prompt(rng, 300, vocab_size)
    prompts: dict[str, list[int]] = {}
    for i, length in enumerate([1, 9, 16, 40, 77, 130, 211, 300]):
        # Longer prompts share the first half of `shared`: prefix cache hits.
        num_shared = length // 2 if length >= 40 else 0
        prompts[f"r{i}"] = shared[:num_shared] + random_prompt(rng, length - num_shared, vocab_size)
    # 32 blocks hold 512 tokens against ~1000 needed: running sequences get preempted.
    config = make_config(vocab_size, num_blocks=32, max_num_batched_tokens=64)
    runner = _core.TransformerRunner(model.spec, model.weights, config)
    engine = _core.Engine(config, runner)
    tokens, _, _ = run_engine(engine, runner, prompts, greedy(32))

    stats = engine.stats().scheduler
    assert stats.num_preemptions > 0
    assert stats.num_prefix_hit_tokens > 0
    for request_id, prompt in prompts.items():
        ids = torch.tensor([prompt])
        with torch.no_grad():
            generated = model.reference.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=32,
                do_sample=False,
                pad_token_id=0,
                output_logits=True,
                return_dict_in_generate=True,
            )
        theirs = generated.sequences[0, len(prompt) :].tolist()
        assert_same_greedy(request_id, tokens[request_id], theirs, generated.logits)


def test_logprobs_match_transformers(tiny) -> None:
    model = tiny("llama_gqa")
    vocab_size = model.spec.vocab_size
    prompt = random_prompt(random.Random(3), 70, vocab_size)
    config = make_config(vocab_size)
    runner = _core.TransformerRunner(model.spec, model.weights, config)
    engine = _core.Engine(config, runner)
    params = greedy(4, logprobs=2, prompt_logprobs=3)
    tokens, _, outputs = run_engine(engine, runner, {"a": prompt}, params)

    expected = torch.log_softmax(reference_logits(model.reference, prompt + tokens["a"]), -1)
    prompt_entries = [entry for out in outputs["a"] for entry in out.prompt_logprobs]
    assert [e.chosen.token_id for e in prompt_entries] == prompt[1:]
    for p, entry in enumerate(prompt_entries):
        assert entry.chosen.logprob == pytest.approx(expected[p, prompt[p + 1]].item(), abs=1e-4)
        assert [t.token_id for t in entry.top] == expected[p].topk(3).indices.tolist()
    sampled_entries = [entry for out in outputs["a"] for entry in out.logprobs]
    assert [e.chosen.token_id for e in sampled_entries] == tokens["a"]
    for step, entry in enumerate(sampled_entries):
        row = expected[len(prompt) - 1 + step]
        assert entry.chosen.logprob == pytest.approx(row.max().item(), abs=1e-4)
        assert entry.chosen.rank == 1


@pytest.mark.parametrize("kind", ["llama_gqa", "qwen2", "gpt2"])
def test_bfloat16_stays_close_to_float32(tiny, kind: str) -> None:
    model = tiny(kind)
    vocab_size = model.spec.vocab_size
    prompt = random_prompt(random.Random(4), 120, vocab_size)
    logits: dict[str, torch.Tensor] = {}
    for dtype in ("float32", "bfloat16"):
        config = make_config(vocab_size)
        runner = _core.TransformerRunner(model.spec, model.weights, config, dtype=dtype)
        assert runner.dtype == dtype
        _core.testing.set_record_logits(runner, True)
        engine = _core.Engine(config, runner)
        _, recorded, _ = run_engine(engine, runner, {"a": prompt}, greedy(1))
        logits[dtype] = torch.stack([recorded["a"][p] for p in range(len(prompt))])
    fp32, bf16 = logits["float32"], logits["bfloat16"]
    assert bf16.dtype == torch.float32
    # Loose: bf16 keeps ~3 significant digits through every layer.
    assert (bf16 - fp32).abs().max().item() < 0.1 * fp32.abs().max().item()
    agreement = (bf16.argmax(-1) == fp32.argmax(-1)).float().mean().item()
    assert agreement > 0.9


@pytest.mark.parametrize("kind", ["llama_gqa", "qwen2"])
def test_bfloat16_logits_track_transformers_in_bfloat16(tiny, kind: str) -> None:
    """bf16 on both sides (our packed bf16 linear where the CPU has
    AVX512-BF16, ATen's otherwise): our logits sit clearly closer to
    transformers' bf16 logits than bf16 sits to float32."""
    import copy

    model = tiny(kind)
    vocab_size = model.spec.vocab_size
    prompt = random_prompt(random.Random(5), 100, vocab_size)
    config = make_config(vocab_size, prefix_caching=False)
    runner = _core.TransformerRunner(model.spec, model.weights, config, dtype="bfloat16")
    _core.testing.set_record_logits(runner, True)
    engine = _core.Engine(config, runner)
    _, recorded, _ = run_engine(engine, runner, {"a": prompt}, greedy(1))
    ours = torch.stack([recorded["a"][p] for p in range(len(prompt))])
    hf_bf16 = reference_logits(copy.deepcopy(model.reference).to(torch.bfloat16), prompt)
    hf_fp32 = reference_logits(model.reference, prompt)
    gap_to_hf = (ours - hf_bf16).abs().max().item()
    bf16_error = (hf_bf16 - hf_fp32).abs().max().item()
    # Measured: 0.6 and 0.67 of it; a float32-like result would be at 1.
    assert gap_to_hf < 0.8 * bf16_error, (gap_to_hf, bf16_error)
    assert (ours.argmax(-1) == hf_bf16.argmax(-1)).float().mean().item() > 0.9


@pytest.mark.parametrize("narrow", ["bfloat16", "int8"])
def test_float32_model_over_a_narrower_kv_cache(tiny, narrow: str) -> None:
    """kv_cache_dtype='bfloat16' (half the bytes) or 'int8' (rows of int8 with
    a scale each): the model computes in float32 over the narrower pools; the
    prefill (which reads this step's rows back from the pool) and the decodes
    after it stay close to the float32 cache's logits, and top tokens agree."""
    model = tiny("llama_gqa")
    vocab_size = model.spec.vocab_size
    prompt = random_prompt(random.Random(6), 120, vocab_size)
    logits = {}
    for kv_cache_dtype in ("auto", narrow):
        config = make_config(vocab_size, prefix_caching=False)
        runner = _core.TransformerRunner(
            model.spec, model.weights, config, dtype="float32", kv_cache_dtype=kv_cache_dtype
        )
        assert runner.dtype == "float32"
        assert runner.kv_cache_dtype == ("float32" if kv_cache_dtype == "auto" else narrow)
        _core.testing.set_record_logits(runner, True)
        engine = _core.Engine(config, runner)
        _, recorded, _ = run_engine(engine, runner, {"a": prompt}, greedy(8))
        # the prompt's positions and seven decodes
        logits[kv_cache_dtype] = torch.stack([recorded["a"][p] for p in range(len(prompt) + 7)])
    fp32, narrow_cache = logits["auto"], logits[narrow]
    assert not torch.equal(fp32, narrow_cache)  # the cache really is narrower
    assert (narrow_cache - fp32).abs().max().item() < 0.05 * fp32.abs().max().item()
    assert (narrow_cache.argmax(-1) == fp32.argmax(-1)).float().mean().item() > 0.9


def test_kv_cache_dtype_is_checked(tiny) -> None:
    model = tiny("llama_gqa")
    config = make_config(model.spec.vocab_size)
    with pytest.raises(ValueError, match="needs a float32 model"):
        _core.TransformerRunner(
            model.spec, model.weights, config, dtype="bfloat16", kv_cache_dtype="float32"
        )
    with pytest.raises(
        ValueError, match="kv_cache_dtype must be one of auto, float32, bfloat16, float16, int8"
    ):
        _core.TransformerRunner(model.spec, model.weights, config, kv_cache_dtype="fp8")
    with pytest.raises(ValueError, match="needs a float32 model"):
        _core.TransformerRunner(
            model.spec, model.weights, config, dtype="bfloat16", kv_cache_dtype="int8"
        )


def test_missing_weight_is_named(tiny) -> None:
    model = tiny("llama_gqa")
    weights = dict(model.weights)
    del weights["model.layers.1.self_attn.k_proj.weight"]
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight"):
        _core.TransformerRunner(model.spec, weights, make_config(model.spec.vocab_size))


def test_missing_bias_is_named(tiny) -> None:
    model = tiny("qwen2")
    weights = dict(model.weights)
    del weights["model.layers.0.self_attn.v_proj.bias"]
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.v_proj\.bias"):
        _core.TransformerRunner(model.spec, weights, make_config(model.spec.vocab_size))


def test_wrong_shape_names_tensor_and_both_shapes(tiny) -> None:
    model = tiny("llama_gqa")
    weights = dict(model.weights)
    weights["model.layers.0.mlp.up_proj.weight"] = torch.zeros(127, 64)
    message = r"up_proj\.weight' has shape \[127, 64\], expected \[128, 64\]"
    with pytest.raises(ValueError, match=message):
        _core.TransformerRunner(model.spec, weights, make_config(model.spec.vocab_size))


def test_gpt2_conv1d_not_transposed_is_rejected(tiny) -> None:
    model = tiny("gpt2")
    weights = dict(model.weights)
    name = "transformer.h.0.mlp.c_fc.weight"
    weights[name] = weights[name].t().contiguous()  # [out, in] instead of Conv1D's [in, out]
    message = r"c_fc\.weight' has shape \[256, 64\], expected \[64, 256\]"
    with pytest.raises(ValueError, match=message):
        _core.TransformerRunner(model.spec, weights, make_config(model.spec.vocab_size))


def test_bad_dtype_and_device_are_rejected(tiny) -> None:
    model = tiny("llama_gqa")
    config = make_config(model.spec.vocab_size)
    with pytest.raises(ValueError, match="float16 is not supported on cpu"):
        _core.TransformerRunner(model.spec, model.weights, config, dtype="float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        _core.TransformerRunner(model.spec, model.weights, config, dtype="int8")
    with pytest.raises(ValueError, match="device must be like"):
        _core.TransformerRunner(model.spec, model.weights, config, device="tpu-ish")


def test_spec_from_hf_configs(tiny) -> None:
    llama3 = tiny("llama3_rope").spec
    assert (llama3.architecture, llama3.num_kv_heads, llama3.head_dim) == ("llama", 2, 16)
    assert llama3.rope_theta == 500000.0
    assert llama3.rope_scaling.type == "llama3"
    assert llama3.rope_scaling.factor == 8.0
    assert llama3.rope_scaling.original_max_position_embeddings == 32
    assert tiny("qwen2").spec.attention_bias
    assert not tiny("llama_gqa").spec.attention_bias
    assert tiny("llama_tied").spec.tie_word_embeddings
    gpt2 = tiny("gpt2").spec
    assert (gpt2.architecture, gpt2.num_heads, gpt2.intermediate_size) == ("gpt2", 4, 256)
    assert gpt2.max_position_embeddings == 512
    # transformers 4 spelling of RoPE settings
    old = model_spec_from_hf_config(
        {
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": 10,
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "rope_theta": 1000.0,
            "rope_scaling": {"type": "linear", "factor": 2.0},
        }
    )
    assert old.rope_theta == 1000.0
    assert (old.rope_scaling.type, old.rope_scaling.factor) == ("linear", 2.0)


def test_spec_rejects_what_is_not_implemented() -> None:
    with pytest.raises(ValueError, match="supported: LlamaForCausalLM, Qwen2ForCausalLM"):
        model_spec_from_hf_config({"architectures": ["FalconForCausalLM"]})
    base = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 10,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 16,
    }
    with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
        model_spec_from_hf_config({**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="hidden_act"):
        model_spec_from_hf_config({**base, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="num_kv_heads"):
        model_spec_from_hf_config({**base, "num_key_value_heads": 3, "num_attention_heads": 4})
