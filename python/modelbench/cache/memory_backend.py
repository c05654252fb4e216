"""The in-process backend: entries in LRU order, a map of exact keys, a
vector index per partition, and a heap of expiry times. Not shared between
processes; see redis_backend.py for that."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict

import numpy as np

from modelbench.cache.entry import CacheEntry
from modelbench.cache.vector_index import VectorIndex


class MemoryBackend:
    """At most ``max_entries``; the least recently used goes first."""

    available = True  # nothing to lose touch with

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._exact: dict[str, str] = {}  # exact key -> entry id
        self._indexes: dict[str, VectorIndex] = {}  # partition -> index
        self._expiry: list[tuple[float, str]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def count(self) -> int:
        self._expire()
        return len(self._entries)

    async def get_exact(self, exact_key: str) -> CacheEntry | None:
        self._expire()
        entry_id = self._exact.get(exact_key)
        return None if entry_id is None else self._touch(entry_id)

    async def search(
        self, partition: str, vector: np.ndarray, threshold: float
    ) -> list[tuple[CacheEntry, float]]:
        """The live entries at least ``threshold`` similar, best first."""
        self._expire()
        index = self._indexes.get(partition)
        if index is None:
            return []
        found = []
        for entry_id, similarity in index.search(vector):
            if similarity < threshold:
                break
            entry = self._touch(entry_id)
            if entry is not None:
                found.append((entry, similarity))
        return found

    async def put(self, entry: CacheEntry, vector: np.ndarray | None) -> None:
        self._expire()
        old = self._exact.get(entry.exact_key)
        if old is not None:
            self._drop(old)
        self._entries[entry.id] = entry
        self._exact[entry.exact_key] = entry.id
        heapq.heappush(self._expiry, (entry.expires_at, entry.id))
        if vector is not None:
            index = self._indexes.get(entry.partition)
            if index is None:
                index = self._indexes[entry.partition] = VectorIndex(vector.shape[0])
            index.add(entry.id, vector)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))  # the least recently used

    async def clear(self, model_name: str | None = None, owner: str | None = None) -> int:
        doomed = [
            e.id
            for e in self._entries.values()
            if (model_name is None or e.model_name == model_name)
            and (owner is None or e.owner == owner)
        ]
        for entry_id in doomed:
            self._drop(entry_id)
        return len(doomed)

    def _touch(self, entry_id: str) -> CacheEntry | None:
        entry = self._entries.get(entry_id)
        if entry is None:
            return None
        if entry.expired():
            self._drop(entry_id)
            return None
        self._entries.move_to_end(entry_id)
        return entry

    def _drop(self, entry_id: str) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        if self._exact.get(entry.exact_key) == entry_id:
            del self._exact[entry.exact_key]
        index = self._indexes.get(entry.partition)
        if index is not None:
            index.remove(entry_id)
            if not len(index):
                del self._indexes[entry.partition]

    def _expire(self) -> None:
        now = time.time()
        while self._expiry and self._expiry[0][0] <= now:
            _, entry_id = heapq.heappop(self._expiry)
            entry = self._entries.get(entry_id)
            if entry is not None and entry.expired(now):
                self._drop(entry_id)
