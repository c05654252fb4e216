"""Fixtures for checkpoint tests: the default GGUF, loaded once."""

from __future__ import annotations

import pytest

from modelbench.models import Checkpoint, load_checkpoint


@pytest.fixture(scope="session")
def default_checkpoint() -> Checkpoint:
    """The default model (SmolLM2-135M-Instruct GGUF), loaded once per session."""
    return load_checkpoint(None)
