"""Text embeddings: each input's mean-pooled, L2-normalized final hidden
state (after the model's final norm), computed by the C++ runner over a
scratch KV pool of its own, beside the engine's generation.

Inputs are tokenized as prompts are for generation (the tokenizer's special
tokens, BOS included where the model uses one), so an embedding equals
``normalize(last_hidden_state.mean(positions))`` of ``transformers``' base
model on the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelbench import _core
from modelbench.models.tokenizer import Tokenizer

EmbedInput = str | Sequence[int] | Sequence[str] | Sequence[Sequence[int]]


@dataclass
class EmbeddingOutput:
    embeddings: list[list[float]]  # one per input, in order
    num_prompt_tokens: int  # over all inputs


def token_ids_of(tokenizer: Tokenizer, inputs: EmbedInput) -> list[list[int]]:
    """One list of token ids per input; ValueError saying what is wrong."""
    if isinstance(inputs, str):
        items: list = [inputs]
    elif isinstance(inputs, Sequence) and inputs and all(isinstance(t, int) for t in inputs):
        items = [list(inputs)]  # one prompt of token ids
    else:
        items = list(inputs)
    if not items:
        raise ValueError("input must hold at least one text or list of token ids")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise ValueError(f"input[{i}] is an empty string")
            out.append(tokenizer.encode(item))
        elif isinstance(item, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            out.append(list(item))
        else:
            raise ValueError(f"input[{i}] must be a string or a list of token ids, got {type(item).__name__}")
    return out


def embed(runner: _core.TransformerRunner, tokenizer: Tokenizer, inputs: EmbedInput) -> EmbeddingOutput:
    ids = token_ids_of(tokenizer, inputs)
    vectors = runner.embed(ids)  # releases the GIL while it runs
    return EmbeddingOutput(vectors.tolist(), sum(len(x) for x in ids))
