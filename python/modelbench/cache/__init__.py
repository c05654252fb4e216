"""The response cache in front of generation: an exact cache (a hash of the
model version, the normalized prompt or messages and every parameter that
changes the output) and a semantic one (the prompt's embedding against the
cached prompts of the same model version and parameters, through a vector
index), in process or in Redis. See docs/cache.md."""

from modelbench.cache.entry import Answer, CacheEntry
from modelbench.cache.fingerprint import CacheQuery
from modelbench.cache.response_cache import Lookup, ResponseCache
from modelbench.cache.settings import CachePolicy

__all__ = [
    "Answer",
    "CacheEntry",
    "CachePolicy",
    "CacheQuery",
    "Lookup",
    "ResponseCache",
]
