"""The real default model (SmolLM2-135M-Instruct, Q4_1 GGUF, dequantized):
modelbench's greedy output equals transformers' on the same weights."""

from __future__ import annotations

import pytest
import torch

from modelbench import LLM, SamplingParams
from modelbench.models import load_checkpoint
from modelbench.models.hf_reference import transformers_model

QUESTIONS = [
    "What is the capital of France?",
    "Write a short poem about autumn leaves.",
    "List three uses of a paperclip.",
]
NUM_TOKENS = 32


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(max_model_len=512, kv_cache_memory=256 * 1024 * 1024)


def test_greedy_output_equals_transformers(llm: LLM) -> None:
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    params = SamplingParams(temperature=0.0, max_tokens=NUM_TOKENS, ignore_eos=True)
    outs = llm.chat(conversations, params, use_tqdm=False)

    reference = transformers_model(load_checkpoint(None))
    reference.generation_config.eos_token_id = None  # like ignore_eos: run past <|im_end|>
    for out in outs:
        ids = torch.tensor([out.prompt_token_ids])
        with torch.inference_mode():
            expected = reference.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NUM_TOKENS,
                do_sample=False,
                pad_token_id=0,
            )[0, ids.shape[1] :].tolist()
        assert out.outputs[0].token_ids == expected, out.prompt
    assert "Paris" in outs[0].outputs[0].text


def test_default_model_loads_without_arguments(llm: LLM) -> None:
    assert llm.architecture == "LlamaForCausalLM"
    assert llm.model_source.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert llm.tokenizer.eos_token_id == llm.config.eos_token_id
