"""The semantic cache's vector index: one HNSW graph (usearch) per
partition, over unit vectors compared by inner product (= cosine)."""

from __future__ import annotations

import itertools

import numpy as np
from usearch.index import Index


class VectorIndex:
    """Entry ids by vector. ``search`` answers the closest live entries,
    best first, with their cosine similarity."""

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self._index = Index(ndim=ndim, metric="ip", dtype="f32")
        self._labels = itertools.count(1)
        self._ids: dict[int, str] = {}  # label -> entry id
        self._labels_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, entry_id: str, vector: np.ndarray) -> None:
        if vector.shape != (self.ndim,):
            raise ValueError(
                f"an embedding of shape {vector.shape} for an index of {self.ndim} dimensions; "
                "every prompt of a cache must be embedded by the same model"
            )
        if entry_id in self._labels_of:
            return
        label = next(self._labels)
        self._index.add(label, np.ascontiguousarray(vector, dtype=np.float32))
        self._ids[label] = entry_id
        self._labels_of[entry_id] = label

    def remove(self, entry_id: str) -> None:
        label = self._labels_of.pop(entry_id, None)
        if label is not None:
            del self._ids[label]
            self._index.remove(label)

    def search(self, vector: np.ndarray, count: int = 4) -> list[tuple[str, float]]:
        if not self._ids or vector.shape != (self.ndim,):
            return []
        found = self._index.search(np.ascontiguousarray(vector, dtype=np.float32), count)
        out = []
        for label, distance in zip(found.keys, found.distances, strict=True):
            entry_id = self._ids.get(int(label))
            if entry_id is not None:
                out.append((entry_id, 1.0 - float(distance)))
        return out
