"""modelbench.LLM and AsyncEngine on tiny random-weight models: the API,
sampling reproducibility, stop strings, streaming, and bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from modelbench import LLM, AsyncEngine, EngineArgs, SamplingParams

from ..tiny_models import build_tiny_model, load_reference_model


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama_gqa", tmp_path_factory.mktemp("llm") / "llama")


@pytest.fixture(scope="module")
def llm(llama_path: Path) -> LLM:
    return LLM(str(llama_path), max_model_len=256, kv_cache_memory=64 * 1024 * 1024)


def hf_greedy(path: Path, ids: list[int], n: int) -> list[int]:
    model = load_reference_model(path)
    model.generation_config.eos_token_id = None  # like ignore_eos
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=n,
        do_sample=False,
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
    )
    return out[0, len(ids) :].tolist()


def test_generate_text_and_token_prompts_greedy_matches_transformers(
    llm: LLM, llama_path: Path
) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    outs = llm.generate(["hello world", [5, 6, 7, 8]], params, use_tqdm=False)
    assert [o.prompt for o in outs] == ["hello world", None]
    assert outs[1].prompt_token_ids == [5, 6, 7, 8]
    for out in outs:
        completion = out.outputs[0]
        assert completion.finish_reason == "length"
        assert len(completion.token_ids) == 12
        assert completion.token_ids == hf_greedy(llama_path, out.prompt_token_ids, 12)
        assert completion.text == llm.tokenizer.decode(completion.token_ids)


def test_batch_invariance_alone_and_in_a_batch_of_16(llm: LLM) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    prompts = [[(7 * i + j) % 300 + 3 for j in range(5 + 9 * i)] for i in range(16)]
    alone = llm.generate(prompts[5], params, use_tqdm=False)[0].outputs[0].token_ids
    batch = llm.generate(prompts, params, use_tqdm=False)
    assert batch[5].outputs[0].token_ids == alone


def test_seeded_sampling_is_reproducible_and_n_gives_n_outputs(llm: LLM) -> None:
    params = SamplingParams(
        temperature=1.0, top_p=0.9, max_tokens=16, seed=1234, n=3, ignore_eos=True
    )
    first = llm.generate("once upon a time", params, use_tqdm=False)[0]
    second = llm.generate(["filler one", "once upon a time", "filler two"], params, use_tqdm=False)[
        1
    ]
    assert len(first.outputs) == 3
    assert [o.token_ids for o in first.outputs] == [o.token_ids for o in second.outputs]
    assert len({tuple(o.token_ids) for o in first.outputs}) > 1  # different seeds per index


def test_stop_strings_are_cut_even_across_token_boundaries(llm: LLM) -> None:
    base = llm.generate(
        "the sea", SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True), use_tqdm=False
    )
    text = base[0].outputs[0].text
    ids = base[0].outputs[0].token_ids
    # A stop string that starts inside one token and ends in the next.
    pieces = [llm.tokenizer.decode(ids[: i + 1]) for i in range(len(ids))]
    boundary = next(
        i
        for i in range(2, len(ids))
        if len(pieces[i]) - len(pieces[i - 1]) >= 1 and len(pieces[i - 1]) >= 2
    )
    stop = text[len(pieces[boundary - 1]) - 1 : len(pieces[boundary - 1]) + 1]
    assert len(stop) == 2
    cut = llm.generate(
        "the sea",
        SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop]),
        use_tqdm=False,
    )
    completion = cut[0].outputs[0]
    assert completion.finish_reason == "stop"
    assert completion.stop_reason == stop
    assert completion.text == text[: text.find(stop)]
    kept = llm.generate(
        "the sea",
        SamplingParams(
            temperature=0.0,
            max_tokens=24,
            ignore_eos=True,
            stop=[stop],
            include_stop_str_in_output=True,
        ),
        use_tqdm=False,
    )
    assert kept[0].outputs[0].text == text[: text.find(stop) + len(stop)]


def test_logprobs_are_returned(llm: LLM) -> None:
    out = llm.generate(
        [3, 4, 5],
        SamplingParams(
            temperature=0.0, max_tokens=4, logprobs=3, prompt_logprobs=2, ignore_eos=True
        ),
        use_tqdm=False,
    )[0]
    completion = out.outputs[0]
    assert len(completion.logprobs) == 4
    for token_id, position in zip(completion.token_ids, completion.logprobs):
        assert token_id in position
        assert position[token_id].rank == 1  # greedy picks the most likely token
        assert len(position) >= 3
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == 3
    assert 4 in out.prompt_logprobs[1] and 5 in out.prompt_logprobs[2]


def test_streamed_deltas_concatenate_to_the_final_text(llama_path: Path, llm: LLM) -> None:
    async def run() -> tuple[str, list[int], str]:
        engine = AsyncEngine(
            EngineArgs(model=str(llama_path), max_model_len=256, kv_cache_memory=32 * 1024 * 1024)
        )
        try:
            text, ids, reason = "", [], ""
            async for delta in engine.generate(
                "the sea", SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True), "s1"
            ):
                text += delta.outputs[0].text
                ids += delta.outputs[0].token_ids
                reason = delta.outputs[0].finish_reason or reason
            # Leaving a stream early aborts the request and frees its blocks.
            async for _ in engine.generate(
                "abandon me", SamplingParams(max_tokens=200, ignore_eos=True), "s2"
            ):
                break
            for _ in range(100):
                if engine.stats().scheduler.kv_cache_usage == 0.0:
                    break
                await asyncio.sleep(0.05)
            assert engine.stats().scheduler.kv_cache_usage == 0.0
            return text, ids, reason
        finally:
            engine.shutdown()

    text, ids, reason = asyncio.run(run())
    final = llm.generate(
        "the sea", SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True), use_tqdm=False
    )[0]
    assert ids == final.outputs[0].token_ids
    assert text == final.outputs[0].text
    assert reason == "length"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"temperature": -1.0}, "temperature must be"),
        ({"max_tokens": 0}, "max_tokens must be >= 1"),
        ({"n": 0}, "n must be"),
        ({"top_k": -5}, "top_k must be >= 0"),
        ({"min_p": 1.5}, "min_p must be in"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"stop": [""]}, "stop must be"),
        ({"logprobs": -2}, "logprobs must be"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_invalid_sampling_params_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_a_bfloat16_kv_cache_holds_twice_the_blocks(llama_path: Path) -> None:
    budget = 64 * 1024 * 1024
    wide = LLM(str(llama_path), max_model_len=256, kv_cache_memory=budget)
    narrow = LLM(
        str(llama_path), max_model_len=256, kv_cache_memory=budget, kv_cache_dtype="bfloat16"
    )
    assert narrow.runner.kv_cache_dtype == "bfloat16" and narrow.runner.dtype == "float32"
    assert narrow.runner.num_kv_blocks == 2 * wide.runner.num_kv_blocks
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    out_wide = wide.generate([[5, 6, 7, 8] * 10], params, use_tqdm=False)[0].outputs[0].token_ids
    out_narrow = (
        narrow.generate([[5, 6, 7, 8] * 10], params, use_tqdm=False)[0].outputs[0].token_ids
    )
    assert len(out_narrow) == 16
    # bf16 K/V move logits by ~1e-3 of their range: greedy tokens agree but for near ties.
    assert sum(a == b for a, b in zip(out_wide, out_narrow)) >= 12


def test_an_int8_kv_cache_holds_nearly_four_times_the_blocks(llama_path: Path) -> None:
    """int8 rows and a float32 scale each: 4 * head_dim + ... bytes become
    head_dim + 4 a row (head_dim 16 here: 64 -> 20 bytes)."""
    budget = 64 * 1024 * 1024
    wide = LLM(str(llama_path), max_model_len=256, kv_cache_memory=budget)
    narrow = LLM(str(llama_path), max_model_len=256, kv_cache_memory=budget, kv_cache_dtype="int8")
    assert narrow.runner.kv_cache_dtype == "int8" and narrow.runner.dtype == "float32"
    head_dim = wide.runner.spec.head_dim
    expected = wide.runner.num_kv_blocks * 4 * head_dim // (head_dim + 4)
    assert abs(narrow.runner.num_kv_blocks - expected) <= 1
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    prompt = [[5, 6, 7, 8] * 10]
    out_wide = wide.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids
    out_narrow = narrow.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids
    assert len(out_narrow) == 16
    assert sum(a == b for a, b in zip(out_wide, out_narrow)) >= 12


def test_bad_input_raises_value_error(llm: LLM, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_model_len=256"):
        llm.generate([[5] * 300], use_tqdm=False)
    with pytest.raises(ValueError, match="not found"):
        LLM(str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of"):
        LLM(str(tmp_path), dtype="int3")
    with pytest.raises(ValueError, match="kv_cache_dtype must be 'auto' or one of"):
        LLM(str(tmp_path), kv_cache_dtype="fp8")
    with pytest.raises(ValueError, match="needs dtype='float32'"):
        LLM(str(tmp_path), dtype="bfloat16", kv_cache_dtype="float32")
    with pytest.raises(ValueError, match="float16 is for CUDA"):
        LLM(str(tmp_path), kv_cache_dtype="float16")
    with pytest.raises(ValueError, match="sampling_params for 2 prompts"):
        llm.generate(["a", "b"], [SamplingParams()] * 3, use_tqdm=False)
    # The engine is still usable after rejected input.
    assert llm.generate("ok", SamplingParams(max_tokens=2), use_tqdm=False)[0].outputs[0].token_ids


def test_vllm_prompt_shapes_give_the_same_outputs(llm: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=4)
    ids = llm.get_tokenizer().encode("The cat", add_special_tokens=True)
    expected = llm.generate("The cat", greedy, use_tqdm=False)[0].outputs[0].token_ids
    shapes = [
        {"prompt": "The cat"},
        {"prompt_token_ids": ids},
        ids,
        [{"prompt": "The cat"}, {"prompt_token_ids": ids}, "The cat", ids],
    ]
    for shape in shapes:
        outs = llm.generate(shape, greedy, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == [expected] * len(outs), shape
    assert len(llm.generate([{"prompt": "a"}, {"prompt": "b"}], greedy, use_tqdm=False)) == 2
    # Both keys, as vLLM's TokensPrompt allows: the ids are generated from,
    # the text is what the output reports as its prompt.
    both = llm.generate({"prompt": "The cat", "prompt_token_ids": ids}, greedy, use_tqdm=False)
    assert both[0].prompt == "The cat" and both[0].prompt_token_ids == ids
    assert both[0].outputs[0].token_ids == expected


def test_priority_per_prompt_overrides_the_sampling_params(llm: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=3)
    outs = llm.generate(["a", "b"], greedy, use_tqdm=False, priority=[5, -1])
    same = llm.generate(["a", "b"], greedy, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in same]
    with pytest.raises(ValueError, match="got 1 priorities for 2 prompts"):
        llm.generate(["a", "b"], greedy, use_tqdm=False, priority=[1])
    with pytest.raises(ValueError, match="priority must fit in 32 bits"):
        SamplingParams(priority=2**40)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ({"prompt": "hi", "multi_modal_data": {"image": 1}}, "multi_modal_data is not supported"),
        ({"text": "hi"}, "holds 'prompt' or 'prompt_token_ids'"),
        ({"prompt": 5, "prompt_token_ids": [1]}, "'prompt' must be a string"),
        ({}, "holds 'prompt' or 'prompt_token_ids'"),
        (42, "prompts must be a string, a list of token ids"),
        ([3.5], "a prompt must be a string"),
        ([[1, "x"]], "a prompt must be a string"),
    ],
)
def test_other_prompt_shapes_are_a_type_error_naming_the_accepted_ones(
    llm: LLM, prompts: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        llm.generate(prompts, use_tqdm=False)  # type: ignore[arg-type]
