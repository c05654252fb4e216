"""``speculative_config``, as vLLM's: how the engine speculates.

    LLM(..., speculative_config={"method": "ngram", "num_speculative_tokens": 4,
                                 "prompt_lookup_max": 3})
    modelbench serve --speculative-config '{"method": "ngram", "num_speculative_tokens": 4}'

``ngram`` (prompt lookup): the C++ scheduler looks the sequence's last n
tokens up earlier in its prompt and output (n from ``prompt_lookup_max``
down to ``prompt_lookup_min``, 3 and 2 by default) and proposes the
``num_speculative_tokens`` that followed; one forward over the paged cache
verifies them (greedy: exactly greedy decoding's tokens; sampled: rejection
sampling, plain sampling's distribution). A sequence whose proposal is
wholly rejected pauses proposing for 1, 2, 4, ... up to 64 steps, so
open-ended text, where lookups rarely hit, pays little.
``disable_by_batch_size`` stops proposals while more sequences run.

``draft_model``: ``{"method": "draft_model", "model": PATH,
"num_speculative_tokens": k}``: a smaller model with the model's tokenizer
(a Hugging Face folder or a GGUF file) proposes k tokens greedily before
each step; the model verifies them as above. The draft keeps a KV pool of
its own in the model's block layout (its memory comes on top of
kv_cache_memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelbench import _core
from modelbench.engine.errors import InvalidParameter

PARAM = "speculative_config"
NGRAM_KEYS = {
    "method",
    "num_speculative_tokens",
    "prompt_lookup_max",
    "prompt_lookup_min",
    "disable_by_batch_size",
}
DRAFT_KEYS = {"method", "model", "num_speculative_tokens", "disable_by_batch_size"}


def speculative_config(value: Mapping[str, Any] | None) -> _core.SpeculativeConfig:
    """The C++ engine's SpeculativeConfig of ``value`` (None: off). Raises
    InvalidParameter naming speculative_config for a method, key or value it
    cannot take."""
    config = _core.SpeculativeConfig()
    if value is None:
        return config
    if not isinstance(value, Mapping):
        raise InvalidParameter(
            f"{PARAM} must be an object such as {{'method': 'ngram', "
            f"'num_speculative_tokens': 4}}, got {type(value).__name__}",
            PARAM,
        )
    method = value.get("method", "draft_model" if "model" in value else "ngram")
    if method not in ("ngram", "draft_model"):
        raise InvalidParameter(
            f"{PARAM}: method must be 'ngram' or 'draft_model', got {method!r}", PARAM
        )
    keys = NGRAM_KEYS if method == "ngram" else DRAFT_KEYS
    unknown = sorted(set(value) - keys)
    if unknown:
        raise InvalidParameter(
            f"{PARAM}: unknown keys {', '.join(unknown)}; {method} takes {', '.join(sorted(keys))}",
            PARAM,
        )
    if method == "draft_model":
        model = value.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidParameter(
                f"{PARAM}: draft_model needs 'model', the draft's path (a Hugging Face "
                "folder or a GGUF file)",
                PARAM,
            )
        config.draft_model = True
    if "num_speculative_tokens" not in value:
        raise InvalidParameter(f"{PARAM}: num_speculative_tokens is required", PARAM)
    for key in keys - {"method", "model"}:
        if key not in value:
            continue
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, int):
            raise InvalidParameter(f"{PARAM}: {key} must be an integer, got {number!r}", PARAM)
        setattr(config, key, number)
    if "prompt_lookup_max" in value and "prompt_lookup_min" not in value:
        config.prompt_lookup_min = min(config.prompt_lookup_min, config.prompt_lookup_max)
    try:
        config.validate()
    except ValueError as e:
        raise InvalidParameter(f"{PARAM}: {e}", PARAM) from e
    return config


def draft_model_path(value: Mapping[str, Any] | None) -> str | None:
    """The draft model's path of a (valid) draft_model config, else None."""
    if value is None or speculative_config(value).draft_model is False:
        return None
    return str(value["model"])
