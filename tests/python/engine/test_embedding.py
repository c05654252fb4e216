"""Embeddings equal transformers' base model: the mean over positions of
last_hidden_state, L2-normalized, on the same token ids; they can be taken
while the engine generates; bad input is a ValueError naming it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from modelbench import LLM, AsyncEngine, EngineArgs, SamplingParams
from modelbench.engine.embedding import embed

from ..tiny_models import load_reference_model

# Lengths 3, 92 (six blocks of 16) and 10 tokens with the tiny tokenizer.
TEXTS = ["hello", "The quick brown fox jumps over the lazy dog. " * 4, "a b c d e f g"]
KV_BYTES = 8 * 1024 * 1024


def vectors(llm: LLM, prompts: object) -> torch.Tensor:
    """LLM.embed's vectors as one tensor, [num_prompts, hidden]."""
    return torch.tensor([out.outputs.embedding for out in llm.embed(prompts)])  # type: ignore[arg-type]


def reference(path: Path, ids: list[list[int]]) -> torch.Tensor:
    """transformers' normalize(last_hidden_state.mean(positions)), one prompt at a time."""
    model = load_reference_model(path).base_model
    rows = []
    with torch.inference_mode():
        for x in ids:
            hidden = model(torch.tensor([x])).last_hidden_state[0]  # [len, hidden]
            rows.append(torch.nn.functional.normalize(hidden.mean(0), dim=0))
    return torch.stack(rows)  # [num_prompts, hidden]


@pytest.mark.parametrize("kind", ["llama_gqa", "qwen2", "mistral", "gpt2"])
def test_embeddings_equal_transformers(kind: str, tiny_model_path: Callable[[str], Path]) -> None:
    path = tiny_model_path(kind)
    llm = LLM(str(path), max_model_len=128, kv_cache_memory=KV_BYTES, block_size=16)
    ids = [llm.tokenizer.encode(t) for t in TEXTS]
    assert len(ids[1]) >= 40  # spans several KV blocks
    got = vectors(llm, TEXTS)  # [3, hidden]
    torch.testing.assert_close(got, reference(path, ids), atol=1e-5, rtol=1e-4)
    # The same ids give the same vector, alone or in a batch.
    torch.testing.assert_close(vectors(llm, ids[2]), got[2:3], atol=1e-6, rtol=0)
    torch.testing.assert_close(vectors(llm, ids), got, atol=1e-6, rtol=0)
    assert torch.allclose(got.norm(dim=1), torch.ones(3))


def test_groups_within_the_step_budget(tiny_model_path: Callable[[str], Path]) -> None:
    """With a budget of 16 tokens the 92-token prompt runs alone and the
    others in groups: the vectors do not change."""
    path = tiny_model_path("llama_gqa")
    small = LLM(str(path), max_model_len=128, kv_cache_memory=KV_BYTES, max_num_batched_tokens=16)
    ids = [small.tokenizer.encode(t) for t in TEXTS * 3]
    got = vectors(small, ids)
    torch.testing.assert_close(got, reference(path, ids), atol=1e-5, rtol=1e-4)
    whole = vectors(LLM(str(path), max_model_len=128, kv_cache_memory=KV_BYTES), ids)
    torch.testing.assert_close(got, whole, atol=1e-6, rtol=0)


def test_input_forms_and_token_count(tiny_model_path: Callable[[str], Path]) -> None:
    llm = LLM(str(tiny_model_path("qwen2")), max_model_len=128, kv_cache_memory=KV_BYTES)
    ids = [llm.tokenizer.encode(t) for t in TEXTS]
    both = embed(llm.runner, llm.tokenizer, TEXTS)
    assert both.num_prompt_tokens == sum(map(len, ids))
    assert len(both.embeddings) == 3 and len(both.embeddings[0]) == llm.runner.spec.hidden_size
    one = embed(llm.runner, llm.tokenizer, TEXTS[0])  # one text
    assert one.num_prompt_tokens == len(ids[0]) and len(one.embeddings) == 1
    torch.testing.assert_close(torch.tensor(one.embeddings[0]), torch.tensor(both.embeddings[0]))
    by_ids = embed(llm.runner, llm.tokenizer, ids[0])  # one list of ids
    assert by_ids == one


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "^input must hold at least one"),
        (5, "^input must be a string, a list of token ids"),
        ([""], r"^input\[0\] is an empty string"),
        ([3.5], r"^input\[0\] must be a string or a list of token ids, got float"),
        ([[1], [2, True]], r"^input\[1\] must hold int token ids, got True"),
        ([[1], []], r"^prompt must not be empty \(prompt 1\)"),
        ([[1, 2], [10**7]], r"^prompt token id 10000000 is outside the vocabulary \[0, \d+\)"),
        ([[-1]], "^prompt token id -1 is outside the vocabulary"),
        ([list(range(1, 70))], "^prompt has 69 tokens, more than max_model_len=64"),
    ],
)
def test_bad_input(bad: object, message: str, tiny_model_path: Callable[[str], Path]) -> None:
    llm = LLM(str(tiny_model_path("llama_gqa")), max_model_len=64, kv_cache_memory=KV_BYTES)
    with pytest.raises(ValueError, match=message):
        embed(llm.runner, llm.tokenizer, bad)  # type: ignore[arg-type]


def test_llm_embed_and_encode_in_vllms_shapes(tiny_model_path: Callable[[str], Path]) -> None:
    llm = LLM(str(tiny_model_path("llama_gqa")), max_model_len=128, kv_cache_memory=KV_BYTES)
    ids = llm.get_tokenizer().encode(TEXTS[0])
    outs = llm.embed([TEXTS[0], {"prompt": TEXTS[0]}, {"prompt_token_ids": ids}, ids])
    assert [o.prompt_token_ids for o in outs] == [ids] * 4 and all(o.finished for o in outs)
    assert len({o.request_id for o in outs}) == 4
    assert all(o.outputs.embedding == outs[0].outputs.embedding for o in outs)
    assert outs[0].outputs.hidden_size == llm.runner.spec.hidden_size
    pooled = llm.encode(TEXTS)
    torch.testing.assert_close(torch.stack([p.outputs.data for p in pooled]), vectors(llm, TEXTS))
    with pytest.raises(ValueError, match="pooling_task 'classify' is not supported"):
        llm.encode(TEXTS, pooling_task="classify")
    with pytest.raises(TypeError, match="a prompt must be"):
        llm.embed([3.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="^prompt must not be empty"):
        llm.embed([[]])


def test_embedding_beside_generation(tiny_model_path: Callable[[str], Path]) -> None:
    path = tiny_model_path("llama_gqa")
    engine = AsyncEngine(EngineArgs(model=str(path), max_model_len=256, kv_cache_memory=KV_BYTES))

    async def both() -> tuple[list[list[float]], int, bool]:
        params = SamplingParams(max_tokens=200, ignore_eos=True, temperature=0.0)
        started = asyncio.Event()

        async def generate() -> int:
            n = 0
            async for out in engine.generate("count with me", params):
                n += len(out.outputs[0].token_ids)
                started.set()
            return n

        task = asyncio.create_task(generate())
        await started.wait()  # the engine is stepping now
        overlapped = not task.done()
        outs = [await engine.embed(TEXTS) for _ in range(5)]
        assert all(o.embeddings == outs[0].embeddings for o in outs)
        return outs[0].embeddings, await task, overlapped

    try:
        embedded, generated, overlapped = asyncio.run(both())
    finally:
        engine.shutdown()
    assert overlapped and generated == 200
    alone = vectors(LLM(str(path), max_model_len=256, kv_cache_memory=KV_BYTES), TEXTS)
    torch.testing.assert_close(torch.tensor(embedded), alone, atol=1e-6, rtol=0)
