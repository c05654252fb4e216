"""A model's default sampling settings, as vLLM's ``--generation-config auto``
reads them: what the model's authors ship beside the weights, applied when a
request leaves a field out (a request's own value always wins).

Where they come from, first match wins:

- a Hugging Face folder: its ``generation_config.json`` (``temperature``,
  ``top_p``, ``top_k``, ``min_p``, ``repetition_penalty``, and
  ``max_new_tokens`` as ``max_tokens``; ``"do_sample": false`` written out
  means greedy, ``temperature`` 0, as ``transformers`` generates);
- a ``.gguf`` file: its ``general.sampling.*`` metadata (llama.cpp's keys);
- the default model (SmolLM2-135M-Instruct), whose GGUF carries neither:
  ``DEFAULT_MODEL_SAMPLING``, the settings its model card recommends and
  a length bound.

The result is a dict of ``SamplingParams`` field names; ``{}`` when the
model ships nothing (the neutral defaults then apply, as with
``--generation-config vllm``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelbench.models.checkpoint import CheckpointError

# SmolLM2-135M-Instruct's model card (https://huggingface.co/HuggingFaceTB/
# SmolLM2-135M-Instruct, "How to use") samples with model.generate(inputs,
# max_new_tokens=50, temperature=0.2, top_p=0.9, do_sample=True): temperature
# and top_p are taken from there. The card's 50 tokens is a demo's length, so
# the bound is ours: 256 tokens. At temperature 0.2 the Q4_1 model falls into
# a loop on about one prompt in four (3 of 12 seeds of the README's "What is
# the capital of France?" ran to 4,000 tokens, 100 s each on 2 cores), and an
# answer that does not end should not run for minutes; a request that sets
# max_tokens gets what it asks for.
DEFAULT_MODEL_SAMPLING: dict[str, Any] = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 256}

# generation_config.json name -> SamplingParams field (vLLM reads the same ones).
_HF_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_tokens",
}

# GGUF general.sampling.* key -> SamplingParams field.
_GGUF_FIELDS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_p": "top_p",
    "general.sampling.top_k": "top_k",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}

GENERATION_CONFIG_FIELDS = (*_HF_FIELDS, "do_sample")  # what an override may set

_INT_FIELDS = {"top_k", "max_tokens"}


def _typed(name: str, field: str, value: Any) -> Any:
    """``value`` of the setting ``name`` as the type of SamplingParams' ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if field in _INT_FIELDS:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def from_generation_config(config: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """The sampling defaults a ``generation_config.json``'s contents give.

    Raises:
        CheckpointError (a ValueError): a field holds something other than a
            number (the message names the file).
    """
    defaults: dict[str, Any] = {}
    try:
        for name, field in _HF_FIELDS.items():
            if config.get(name) is not None:
                defaults[field] = _typed(name, field, config[name])
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    if config.get("do_sample") is False:
        defaults["temperature"] = 0.0  # greedy, as transformers' generate() is
        for name in ("top_p", "top_k", "min_p"):
            defaults.pop(name, None)  # they only shape sampling
    return defaults


def read_generation_config(folder: str | Path) -> dict[str, Any]:
    """A folder's ``generation_config.json`` as sampling defaults (``{}``
    without one).

    Raises:
        CheckpointError (a ValueError): the file is not a JSON object, or
            holds something other than a number where a number belongs.
    """
    file = Path(folder) / "generation_config.json"
    if not file.is_file():
        return {}
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} must hold a JSON object, got {type(config).__name__}")
    return from_generation_config(config, file)


def from_gguf_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The sampling defaults in a GGUF file's ``general.sampling.*`` keys."""
    defaults: dict[str, Any] = {}
    for key, field in _GGUF_FIELDS.items():
        value = metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            defaults[field] = _typed(key, field, value)
    return defaults
