"""Speculative decoding (n-gram) on the default model: greedy outputs are
token for token those of plain decoding, alone and in mixed batches (with
guided, logprobs and sampled requests beside), with prefix reuse and under
preemption; proposals are counted; bad settings are errors naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelbench import LLM, GuidedDecodingParams, SamplingParams
from modelbench.engine.errors import InvalidParameter

SPEC = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}
CODE = (Path(__file__).parents[3] / "python/modelbench/engine/guided.py").read_text()[1800:3000]


def prompts(llm: LLM) -> list[str]:
    chat = llm.get_tokenizer().apply_chat_template
    return [
        "Here is some Python code:\n\n"
        + CODE
        + "\n\nThe same code, copied exactly:\n\n"
        + CODE[:40],
        chat([{"role": "user", "content": "Fix the typos in this code and print it:\n\n" + CODE}]),
        chat([{"role": "user", "content": "Write a story about a dragon."}]),
        chat([{"role": "user", "content": "What are the benefits of exercise?"}]),
    ]


@pytest.fixture(scope="module")
def plain() -> LLM:
    return LLM(max_model_len=1024, kv_cache_memory=128 * 1024 * 1024)


@pytest.fixture(scope="module")
def spec() -> LLM:
    return LLM(max_model_len=1024, kv_cache_memory=128 * 1024 * 1024, speculative_config=SPEC)


def tokens(
    llm: LLM, batch: list[str], params: list[SamplingParams] | SamplingParams
) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in llm.generate(batch, params, use_tqdm=False)]


def test_greedy_output_is_unchanged_alone_and_batched(plain: LLM, spec: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=96)
    batch = prompts(plain)
    expected = tokens(plain, batch, greedy)
    for prompt, want in zip(batch, expected):
        assert tokens(spec, [prompt], greedy)[0] == want
    before = spec.engine.stats().scheduler
    assert tokens(spec, batch, greedy) == expected  # all four in one batch
    after = spec.engine.stats().scheduler
    assert after.num_spec_drafts > before.num_spec_drafts
    assert after.num_spec_accepted_tokens > before.num_spec_accepted_tokens
    # The same prompts again: their prefixes come from the cache.
    assert after.num_prefix_hit_tokens > 0
    assert tokens(spec, batch, greedy) == expected


def test_mixed_batch_with_requests_that_do_not_speculate(plain: LLM, spec: LLM) -> None:
    batch = prompts(plain)
    params = [
        SamplingParams(temperature=0.0, max_tokens=64),
        SamplingParams(temperature=0.0, max_tokens=64, logprobs=2),
        SamplingParams(
            temperature=0.0, max_tokens=64, guided=GuidedDecodingParams(regex="[a-z ]{1,40}")
        ),
        SamplingParams(temperature=0.8, seed=5, max_tokens=64),
    ]
    want = plain.generate(batch, params, use_tqdm=False)
    got = spec.generate(batch, params, use_tqdm=False)
    for i in range(3):  # greedy ones: the same tokens
        assert got[i].outputs[0].token_ids == want[i].outputs[0].token_ids
    # Logprobs as plain decoding's, to float noise: verifying a draft runs
    # the prefill kernels where plain decoding runs the decode ones (under
    # 1e-3 nats over these 64 tokens, AVX-512 and AVX2 alike; 0.024 once on
    # an AVX2 host was threads' misaligned scratch, mended).
    for g, w in zip(got[1].outputs[0].logprobs, want[1].outputs[0].logprobs):
        assert g.keys() == w.keys()
        assert all(abs(g[t].logprob - w[t].logprob) < 1e-2 for t in g)
    assert len(got[3].outputs[0].token_ids) > 0


def test_preemption_keeps_the_output(plain: LLM) -> None:
    """A preempted sequence is recomputed through the prefill kernels, whose
    float sums differ from decoding's in the last bits, so a near-tie in the
    logits may then go the other way: plain decoding under preemption can
    itself change an open-ended answer (the dragon story does here). So the
    reference is decoding without preemption, on the copying prompt, whose
    tokens are far from ties (an edit that loops is not). The exact claim, speculation through
    preemption giving plain decoding's tokens, is the core's test
    (tests/cpp/core/test_speculative.cpp, exact arithmetic)."""
    # Room for about two sequences at a time: four compete and are preempted.
    spec = LLM(
        max_model_len=640,
        kv_cache_memory=16 * 1024 * 1024,
        max_num_seqs=4,
        speculative_config=SPEC,
    )
    batch = prompts(plain)
    greedy = SamplingParams(temperature=0.0, max_tokens=160)
    expected = tokens(plain, batch[:1], greedy)
    got = tokens(spec, batch, greedy)
    assert got[:1] == expected
    assert all(got)
    assert spec.engine.stats().scheduler.num_preemptions > 0
    assert spec.engine.stats().scheduler.num_spec_accepted_tokens > 0


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"method": "draft_model", "num_speculative_tokens": 3}, "needs 'model'"),
        (
            {
                "method": "draft_model",
                "model": "x",
                "num_speculative_tokens": 3,
                "prompt_lookup_max": 2,
            },
            "unknown keys prompt_lookup_max",
        ),
        (
            {"method": "medusa", "num_speculative_tokens": 3},
            "method must be 'ngram' or 'draft_model'",
        ),
        ({"method": "ngram"}, "num_speculative_tokens is required"),
        ({"method": "ngram", "num_speculative_tokens": 99}, r"in \[0, 32\]"),
        (
            {"method": "ngram", "num_speculative_tokens": 2, "lookahead": 1},
            "unknown keys lookahead",
        ),
        (
            {"num_speculative_tokens": 2, "prompt_lookup_max": 1, "prompt_lookup_min": 3},
            "prompt_lookup_max",
        ),
        ({"num_speculative_tokens": "2"}, "must be an integer"),
    ],
)
def test_bad_settings_are_errors_naming_them(config: dict, says: str) -> None:
    from modelbench.engine.speculative import speculative_config

    with pytest.raises(InvalidParameter, match=says) as info:
        speculative_config(config)
    assert info.value.param == "speculative_config"


def test_lookup_max_alone_sets_a_compatible_min() -> None:
    from modelbench.engine.speculative import speculative_config

    one = speculative_config({"num_speculative_tokens": 2, "prompt_lookup_max": 1})
    assert (one.prompt_lookup_min, one.prompt_lookup_max) == (1, 1)
    assert speculative_config(None).num_speculative_tokens == 0


def test_a_draft_model_proposes_and_greedy_output_is_unchanged(plain: LLM) -> None:
    """The default model as its own draft (the smallest with its tokenizer
    that ships in a package): every proposal is the model's own greedy
    choice, so nearly all stand, and the output is plain decoding's."""
    from modelbench.models.default_model import default_model_path

    config = {
        "method": "draft_model",
        "model": str(default_model_path()),
        "num_speculative_tokens": 3,
    }
    drafted = LLM(max_model_len=1024, kv_cache_memory=128 * 1024 * 1024, speculative_config=config)
    assert drafted.runner.has_draft_model
    batch = prompts(plain)
    greedy = SamplingParams(temperature=0.0, max_tokens=64)
    assert tokens(drafted, batch, greedy) == tokens(plain, batch, greedy)
    s = drafted.engine.stats().scheduler
    assert s.num_spec_drafts > 0
    assert s.num_spec_accepted_tokens >= 0.9 * s.num_spec_draft_tokens
    # Sampled requests speculate too (rejection sampling keeps their distribution).
    sampled = drafted.generate(
        batch, SamplingParams(temperature=0.8, seed=1, max_tokens=32), use_tqdm=False
    )
    assert all(o.outputs[0].token_ids for o in sampled)


def test_a_draft_with_another_tokenizer_is_refused(tiny_model_path) -> None:
    config = {
        "method": "draft_model",
        "model": str(tiny_model_path("llama_gqa")),
        "num_speculative_tokens": 2,
    }
    with pytest.raises(InvalidParameter, match="another tokenizer") as info:
        LLM(max_model_len=256, kv_cache_memory=32 * 1024 * 1024, speculative_config=config)
    assert info.value.param == "speculative_config"
