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
from dataclasses import dataclass, field
from typing import Any

import torch

from modelbench import _core
from modelbench.models.tokenizer import Tokenizer

EmbedInput = str | Sequence[int] | Sequence[str] | Sequence[Sequence[int]]


@dataclass
class EmbeddedBatch:
    """What ``AsyncEngine.embed`` returns: the vectors, each input's token
    ids, and the token count an OpenAI-style ``usage.prompt_tokens`` reports."""

    embeddings: list[list[float]]  # one per input, in order: hidden_size floats, unit L2 norm
    num_prompt_tokens: int  # over all inputs, as tokenized (special tokens included)
    token_ids: list[list[int]] = field(default_factory=list)  # each input's, as embedded
    # Inputs cut to the model's max_seq_length (encoder models; see engine/encoder_engine.py).
    truncated: int = 0


@dataclass
class EmbeddingOutput:
    """One input's embedding, as vLLM's ``EmbeddingOutput``."""

    embedding: list[float]

    @property
    def hidden_size(self) -> int:
        return len(self.embedding)


@dataclass
class EmbeddingRequestOutput:
    """What ``LLM.embed`` gives per prompt (vLLM's shape)."""

    request_id: str
    outputs: EmbeddingOutput
    prompt_token_ids: list[int]
    finished: bool = True


@dataclass
class PoolingOutput:
    """One input's pooled vector as a tensor (vLLM's ``PoolingOutput``)."""

    data: torch.Tensor


@dataclass
class PoolingRequestOutput:
    """What ``LLM.encode`` gives per prompt (vLLM's shape)."""

    request_id: str
    outputs: PoolingOutput
    prompt_token_ids: list[int]
    finished: bool = True


def _is_token_id(t: object) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)  # True is an int to Python, not a token


def token_ids_of(tokenizer: Tokenizer, inputs: EmbedInput) -> list[list[int]]:
    """One list of token ids per input: a string or a list of ids is one
    input, a list of those is several. Strings are encoded as generate()
    encodes prompts (special tokens added). ValueError naming the input
    that is wrong."""
    if isinstance(inputs, str):
        items: list[Any] = [inputs]
    elif isinstance(inputs, Sequence) and inputs and all(_is_token_id(t) for t in inputs):
        items = [list(inputs)]  # one prompt of token ids
    elif isinstance(inputs, Sequence):
        items = list(inputs)
    else:
        raise ValueError(
            "input must be a string, a list of token ids, or a list of those, "
            f"got {type(inputs).__name__}"
        )
    if not items:
        raise ValueError("input must hold at least one text or list of token ids")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise ValueError(f"input[{i}] is an empty string")
            out.append(tokenizer.encode(item))
        elif isinstance(item, Sequence):
            bad = next((t for t in item if not _is_token_id(t)), None)
            if bad is not None:
                raise ValueError(f"input[{i}] must hold int token ids, got {bad!r}")
            out.append(list(item))
        else:  # ValueError, not TypeError: it is the client's input, like every error here
            raise ValueError(
                f"input[{i}] must be a string or a list of token ids, got {type(item).__name__}"
            )
    return out


def embed(
    runner: _core.TransformerRunner, tokenizer: Tokenizer, inputs: EmbedInput
) -> EmbeddedBatch:
    """Tokenize ``inputs`` and embed them on ``runner`` (blocking; safe on
    any thread, also while the engine generates). ValueError for bad input:
    "input..." from here, "prompt..." from the runner (empty, an id outside
    the vocabulary, longer than max_model_len)."""
    ids = token_ids_of(tokenizer, inputs)
    vectors = runner.embed(ids)  # releases the GIL while it runs
    return EmbeddedBatch(vectors.tolist(), sum(len(x) for x in ids), ids)
