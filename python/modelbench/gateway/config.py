"""What the gateway is told: its upstreams (any OpenAI-compatible base URL;
several under one name are replicas), a routing policy and a fallback per
name, and the timeouts, retries and breaker settings every upstream shares.

In a models file (``modelbench serve --models-file`` or ``modelbench gateway
--config``)::

    [[upstreams]]
    name = "llama"                          # what clients send as "model"
    url = "http://10.0.0.5:8000/v1"         # the upstream's OpenAI base URL
    model = "meta-llama/Llama-3.1-8B"       # the name the upstream knows it by (default: name)
    api_key_env = "LLAMA_API_KEY"           # its key, read from this variable; never logged

    [gateway]
    policy = { llama = "least-latency" }    # round-robin (default), least-outstanding, ...
    fallback = { llama = "smollm2" }        # when every replica fails, is open or answers 429
    connect_timeout_s = 2.0
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelbench.gateway.breaker import BreakerSettings
from modelbench.gateway.policies import Policy


class UpstreamConfig(BaseModel):
    """One replica: an OpenAI-compatible server answering for ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[^:\s/]+(/[^:\s/]+)*$")
    url: str
    model: str | None = None
    api_key_env: str | None = None
    weight: float = Field(default=1.0, ge=0.0)

    @field_validator("url")
    @classmethod
    def _base_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url {url!r} is not an http(s) base URL like http://127.0.0.1:8000/v1"
            )
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"url {url!r} has a bad port: {exc}") from exc
        return url.rstrip("/")

    @property
    def upstream_model(self) -> str:
        """The model name sent to the upstream."""
        return self.model or self.name

    def api_key(self) -> str | None:
        """The upstream's key, from the environment variable the config names."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(
                f"upstream {self.name} ({self.url}) takes its key from ${self.api_key_env}, "
                "which is not set"
            )
        return key


class GatewayOptions(BaseModel):
    """Routing, fallbacks, timeouts, retries and the breaker, for every upstream."""

    model_config = ConfigDict(extra="forbid")

    policy: dict[str, Policy] = Field(default_factory=dict)
    fallback: dict[str, str] = Field(default_factory=dict)
    affinity_key: str = "user"  # the body field the affinity policy hashes ("user" or "prefix")
    connect_timeout_s: float = Field(default=2.0, gt=0)
    first_byte_timeout_s: float = Field(default=30.0, gt=0)  # until the response's headers
    total_timeout_s: float = Field(default=300.0, gt=0)  # a whole non-streamed response
    max_attempts: int = Field(default=3, ge=1)  # per request, over all replicas
    backoff_base_s: float = Field(default=0.05, ge=0)
    backoff_max_s: float = Field(default=2.0, ge=0)
    max_retry_after_s: float = Field(default=5.0, ge=0)  # longest Retry-After waited on
    health_interval_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    unhealthy_after: int = Field(default=2, ge=1)  # consecutive failed checks
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window_s: float = Field(default=30.0, gt=0)
    breaker_min_requests: int = Field(default=10, ge=1)
    breaker_cooldown_s: float = Field(default=10.0, ge=0)
    max_compare_models: int = Field(default=8, ge=1)
    compare_deadline_s: float = Field(default=120.0, gt=0)

    def breaker_settings(self) -> BreakerSettings:
        return BreakerSettings(
            failure_threshold=self.breaker_failure_threshold,
            failure_rate=self.breaker_failure_rate,
            window_s=self.breaker_window_s,
            min_requests=self.breaker_min_requests,
            cooldown_s=self.breaker_cooldown_s,
        )


def upstream_from_flag(name: str, value: str) -> UpstreamConfig:
    """``--upstream NAME=URL``, or ``NAME=URL#MODEL`` when the upstream knows
    the model by another name (a base URL has no use for a fragment)."""
    url, _, model = value.partition("#")
    return UpstreamConfig(name=name, url=url, model=model or None)


def parse_pairs(flag: str, values: list[str] | None) -> list[tuple[str, str]]:
    """``NAME=VALUE`` flags (``--upstream llama=http://...``), in order."""
    pairs = []
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"{flag} takes NAME=VALUE, got {value!r}")
        pairs.append((name.strip(), rest.strip()))
    return pairs
