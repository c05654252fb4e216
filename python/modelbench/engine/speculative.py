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

``draft_model`` (a second, smaller model proposing) is not implemented: it
is refused with a message saying so, never silently ignored.
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
    method = value.get("method", "ngram")
    if method == "draft_model" or "model" in value:
        raise InvalidParameter(
            f"{PARAM}: method 'draft_model' (a second model proposing tokens) is not "
            "implemented; use {'method': 'ngram', ...}",
            PARAM,
        )
    if method != "ngram":
        raise InvalidParameter(f"{PARAM}: method must be 'ngram', got {method!r}", PARAM)
    unknown = sorted(set(value) - NGRAM_KEYS)
    if unknown:
        raise InvalidParameter(
            f"{PARAM}: unknown keys {', '.join(unknown)}; ngram takes "
            f"{', '.join(sorted(NGRAM_KEYS))}",
            PARAM,
        )
    if "num_speculative_tokens" not in value:
        raise InvalidParameter(f"{PARAM}: num_speculative_tokens is required", PARAM)
    for key in NGRAM_KEYS - {"method"}:
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
