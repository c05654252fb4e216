"""What the cache does for one model version: the server's settings
(``--cache``, ``--cache-threshold``, ``--cache-ttl``: modelbench.config)
with the version's own ``[models.cache]`` table on top."""

from __future__ import annotations

from dataclasses import dataclass

from modelbench.config import (
    DEFAULT_CACHE_THRESHOLD,
    DEFAULT_CACHE_TTL_S,
    CacheMode,
    ModelCacheConfig,
)


@dataclass(frozen=True)
class CachePolicy:
    """The cache's behaviour for one model version, settled."""

    mode: CacheMode = "off"
    threshold: float = DEFAULT_CACHE_THRESHOLD
    ttl_s: float = DEFAULT_CACHE_TTL_S
    share: bool = False
    nondeterministic: bool = False

    @classmethod
    def of(
        cls, mode: CacheMode, threshold: float, ttl_s: float, model: ModelCacheConfig | None
    ) -> CachePolicy:
        """The server's settings with the model's own on top."""
        if model is None:
            return cls(mode=mode, threshold=threshold, ttl_s=ttl_s)
        return cls(
            mode=model.mode or mode,
            threshold=threshold if model.threshold is None else model.threshold,
            ttl_s=ttl_s if model.ttl is None else model.ttl,
            share=model.share,
            nondeterministic=model.nondeterministic,
        )

    @property
    def on(self) -> bool:
        return self.mode != "off"
