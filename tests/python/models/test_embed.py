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

from ..tiny_models import load_reference_model

TEXTS = ["hello", "The quick brown fox jumps over the lazy dog. " * 4, "a b c d e f g"]


def reference(path: Path, ids: list[list[int]]) -> torch.Tensor:
    model = load_reference_model(path).base_model
    rows = []
    with torch.inference_mode():
        for x in ids:
            hidden = model(torch.tensor([x])).last_hidden_state[0]  # [len, hidden]
            rows.append(torch.nn.functional.normalize(hidden.mean(0), dim=0))
    return torch.stack(rows)


@pytest.mark.parametrize("kind", ["llama_gqa", "qwen2", "mistral", "gpt2"])
def test_embeddings_equal_transformers(kind: str, tiny_model_path: Callable[[str], Path]) -> None:
    path = tiny_model_path(kind)
    llm = LLM(str(path), max_model_len=128, kv_cache_memory=8 * 1024 * 1024)
    ids = [llm.tokenizer.encode(t) for t in TEXTS]
    assert len(ids[1]) > 32  # spans several KV blocks
    got = torch.tensor(llm.embed(TEXTS))
    torch.testing.assert_close(got, reference(path, ids), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(llm.embed(ids[2])), got[2:3], atol=1e-6, rtol=0)
    assert torch.allclose(got.norm(dim=1), torch.ones(3))


def test_bad_input(tiny_model_path: Callable[[str], Path]) -> None:
    llm = LLM(str(tiny_model_path("llama_gqa")), max_model_len=64, kv_cache_memory=8 * 1024 * 1024)
    for bad, message in [([], "at least one"), ([""], r"input\[0\] is an empty string"),
                         ([[1, 2], [10**7]], "outside the vocabulary"),
                         ([list(range(1, 70))], "max_model_len=64"), ([3.5], "string or a list")]:
        with pytest.raises(ValueError, match=message):
            llm.embed(bad)


def test_embedding_beside_generation(tiny_model_path: Callable[[str], Path]) -> None:
    path = tiny_model_path("llama_gqa")
    engine = AsyncEngine(EngineArgs(model=str(path), max_model_len=256, kv_cache_memory=8 * 1024 * 1024))

    async def both() -> tuple[list[list[float]], int]:
        params = SamplingParams(max_tokens=200, ignore_eos=True, temperature=0.0)

        async def generate() -> int:
            n = 0
            async for out in engine.generate("count with me", params):
                n += len(out.outputs[0].token_ids)
            return n

        task = asyncio.create_task(generate())
        await asyncio.sleep(0.01)
        embeddings = [(await engine.embed(TEXTS)).embeddings for _ in range(5)]
        assert all(e == embeddings[0] for e in embeddings)
        return embeddings[0], await task

    try:
        embedded, generated = asyncio.run(both())
    finally:
        engine.shutdown()
    assert generated == 200
    alone = LLM(str(path), max_model_len=256, kv_cache_memory=8 * 1024 * 1024).embed(TEXTS)
    torch.testing.assert_close(torch.tensor(embedded), torch.tensor(alone), atol=1e-6, rtol=0)
