"""One cached answer, and what it is filed under."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Answer:
    """What a response is rebuilt from: each choice's text and finish
    reason, and the token counts of the request that generated it."""

    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int


@dataclass
class CacheEntry:
    """An answer, the partition it may be found in (model version, parameters
    and tenant), its exact key, and the request that produced it."""

    partition: str
    exact_key: str
    model: str  # "name:version"
    owner: str | None  # the API key id that made it (None: an open server)
    answer: Answer
    expires_at: float  # wall clock, seconds
    source_record_id: str | None = None  # the request log's id of the request that made it
    text: str | None = None  # what was embedded, for the semantic cache
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)

    @property
    def model_name(self) -> str:
        return self.model.rpartition(":")[0]

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> CacheEntry:
        data: dict[str, Any] = json.loads(raw)
        data["answer"] = Answer(**data["answer"])
        return cls(**data)
