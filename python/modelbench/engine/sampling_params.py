"""SamplingParams: how to sample and when to stop, validated on construction.

Shaped like vLLM's ``SamplingParams`` so that notebook users feel at home.
Token-level fields go to the C++ engine (``_core.SamplingParams``, which
validates them too); stop strings are matched in Python on the detokenized
text, where they can span token boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from modelbench import _core
from modelbench.engine.errors import CONFLICTING_FIELDS, InvalidParameter
from modelbench.engine.guided import GuidedDecodingParams


@dataclass
class SamplingParams:
    """Sampling and stopping parameters of one request.

    Raises ``ValueError`` naming the field when a value is out of range
    (``InvalidParameter``, or the C++ checks' ``_core.InvalidArgument``;
    both carry the field in ``param``).
    ``temperature=0`` is greedy. ``seed`` gives the request its own random
    generator, so the same seed gives the same output whatever else runs in
    the batch. ``priority`` orders requests as vLLM's does: lower runs
    first (a waiting request of lower value displaces a running one of
    higher value when there is no room), equal values in arrival order.
    ``logprobs=n`` returns the sampled token's logprob and the top
    n alternatives; ``prompt_logprobs=n`` does the same for prompt tokens.
    ``guided`` constrains the output to a JSON schema, a regex, a choice or a
    grammar (``GuidedDecodingParams``); the grammar then decides where the
    output ends, so ``min_tokens`` and ``ignore_eos`` cannot be set with it.
    """

    n: int = 1
    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    priority: int = 0
    guided: GuidedDecodingParams | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.n, int) or self.n < 1:
            raise InvalidParameter(f"n must be an integer >= 1, got {self.n!r}", "n")
        for name in ("max_tokens", "min_tokens", "top_k", "priority"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParameter(f"{name} must be an integer, got {value!r}", name)
        if not -(2**31) <= self.priority < 2**31:
            raise InvalidParameter(
                f"priority must fit in 32 bits (-2**31 to 2**31 - 1), got {self.priority}",
                "priority",
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidParameter(
                f"stop must be a list of non-empty strings, got {self.stop!r}", "stop"
            )
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise InvalidParameter(
                f"seed must be a non-negative integer or None, got {self.seed!r}", "seed"
            )
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidParameter(
                    f"{name} must be an integer >= 0 or None, got {value!r}", name
                )
        if self.guided is not None:
            if isinstance(self.guided, dict):
                self.guided = GuidedDecodingParams(**self.guided)
            if not isinstance(self.guided, GuidedDecodingParams):
                raise InvalidParameter(
                    "guided must be a GuidedDecodingParams (or a dict of its fields), "
                    f"got {type(self.guided).__name__}",
                    "guided",
                )
            for name in ("min_tokens", "ignore_eos"):
                if getattr(self, name):
                    raise InvalidParameter(
                        f"{name} cannot be set with a guided decoding constraint: the grammar "
                        f"decides where the output ends (leave {name} out)",
                        name,
                        CONFLICTING_FIELDS,
                    )
        if self.top_k == -1:  # vLLM's spelling of "off"
            self.top_k = 0
        self.to_core()  # the C++ checks name the field, e.g. "top_p must be in (0, 1], got 0"

    def to_core(self, seed: int | None = None) -> _core.SamplingParams:
        """The C++ engine's view of these parameters (validated)."""
        core = _core.SamplingParams()
        core.max_tokens = self.max_tokens
        core.min_tokens = self.min_tokens
        core.temperature = float(self.temperature)
        core.top_k = self.top_k
        core.top_p = float(self.top_p)
        core.min_p = float(self.min_p)
        core.repetition_penalty = float(self.repetition_penalty)
        core.presence_penalty = float(self.presence_penalty)
        core.frequency_penalty = float(self.frequency_penalty)
        core.seed = self.seed if seed is None else seed
        core.stop_token_ids = list(self.stop_token_ids)
        core.ignore_eos = self.ignore_eos
        core.logprobs = -1 if self.logprobs is None else self.logprobs
        core.prompt_logprobs = -1 if self.prompt_logprobs is None else self.prompt_logprobs
        core.guided = self.guided is not None
        core.validate()
        return core

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for logging and storage."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.guided is not None:
            values["guided"] = self.guided.to_dict()
        return values
