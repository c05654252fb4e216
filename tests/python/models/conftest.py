"""Fixtures for checkpoint tests: tiny HF folders built once per session, the default GGUF."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/python: tiny_models

from tiny_models import build_tiny_model  # noqa: E402

from modelbench.models import Checkpoint, load_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_model_path(kind)``: a tiny HF folder of ``kind``, built on first use; read-only."""
    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = build_tiny_model(kind, root / kind)
        return built[kind]

    return get


@pytest.fixture
def tiny_model_copy(
    tiny_model_path: Callable[[str], Path], tmp_path: Path
) -> Callable[[str], Path]:
    """``tiny_model_copy(kind)``: a private copy of a tiny HF folder that a test may break."""

    def copy(kind: str) -> Path:
        return Path(shutil.copytree(tiny_model_path(kind), tmp_path / kind))

    return copy


@pytest.fixture(scope="session")
def default_checkpoint() -> Checkpoint:
    """The default model (SmolLM2-135M-Instruct GGUF), loaded once per session."""
    return load_checkpoint(None)
