"""What a request is cached under.

A request's *scope* is everything that must match before two prompts may
share an answer: the model version (with what it was loaded from), the
endpoint, every parameter that changes the output, and for a chat every
message but the last. Its *partition* adds the tenant (the API key, or
``shared``). The exact key hashes the partition with the whole prompt; the
semantic cache compares the embedding of the prompt's text (a completion's
prompt, or a chat's last message) with those cached in the same partition.

Normalization is Unicode NFC and canonical JSON (keys sorted, fields left
unset dropped). Whitespace and case are kept: the model sees them, so they
may change the answer.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelbench.cache.settings import CachePolicy

# Request fields that never change the text generated.
OUTPUT_NEUTRAL = frozenset(
    {"model", "prompt", "messages", "stream", "stream_options", "user", "priority"}
)
SHARED = "shared"


def normalized(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, Mapping):
        return {str(k): normalized(v) for k, v in value.items() if v is not None}
    if isinstance(value, Sequence):
        return [normalized(v) for v in value]
    return value


def canonical(value: Any) -> str:
    return json.dumps(normalized(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


def tenant_of(owner: str | None) -> str:
    return "open" if owner is None else f"key:{owner}"


@dataclass(frozen=True)
class CacheQuery:
    """One request as the cache sees it."""

    model: str  # "name:version"
    scope: str
    prompt: str  # canonical JSON of the whole prompt or messages
    text: str | None  # what the semantic cache embeds; None: exact matches only
    owner: str | None  # the caller's API key id (None: an open server)
    share: bool  # the caller's entries go to the shared partition
    policy: CachePolicy

    @property
    def write_partition(self) -> str:
        return digest(self.scope, SHARED if self.share else tenant_of(self.owner))

    @property
    def read_partitions(self) -> list[str]:
        """The caller's own partition, then the shared one."""
        own = digest(self.scope, tenant_of(self.owner))
        shared = digest(self.scope, SHARED)
        return [own, shared] if own != shared else [own]

    @staticmethod
    def exact_key(partition: str, prompt: str) -> str:
        return digest(partition, prompt)


def build_query(
    *,
    model: str,
    model_fingerprint: str,
    endpoint: str,
    parameters: Mapping[str, Any],
    prompt: Any = None,
    messages: list[dict[str, Any]] | None = None,
    owner: str | None,
    share: bool,
    policy: CachePolicy,
) -> CacheQuery:
    """The query for a completion (``prompt``) or a chat (``messages``, each
    as the chat template reads it). ``parameters`` are the request's fields;
    those in OUTPUT_NEUTRAL are left out of the key."""
    params = {k: v for k, v in parameters.items() if k not in OUTPUT_NEUTRAL}
    if messages is not None:
        last = messages[-1]
        context = canonical([*messages[:-1], {"role": last.get("role")}])
        content = last.get("content")
        text = content if isinstance(content, str) and content.strip() else None
        whole = canonical(messages)
    else:
        context = ""
        text = prompt if isinstance(prompt, str) and prompt.strip() else None
        whole = canonical(prompt)
    scope = digest(model, model_fingerprint, endpoint, canonical(params), context)
    return CacheQuery(
        model=model,
        scope=scope,
        prompt=whole,
        text=None if text is None else unicodedata.normalize("NFC", text),
        owner=owner,
        share=share,
        policy=policy,
    )
