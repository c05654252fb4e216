"""How well the semantic cache tells a paraphrase from a near miss, measured
on labelled pairs (tests/python/data/cache_pairs*.tsv): each pair's first
prompt is cached, its second looked up, through a real ``ResponseCache``.
benchmarks/cache_quality.py sweeps the threshold; tests check the default."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelbench.cache.embedder import Embedder, embed
from modelbench.cache.entry import Answer
from modelbench.cache.fingerprint import build_query
from modelbench.cache.memory_backend import MemoryBackend
from modelbench.cache.response_cache import ResponseCache
from modelbench.cache.settings import CachePolicy


@dataclass(frozen=True)
class Pair:
    should_hit: bool
    kind: str  # paraphrase | city | negation | number | entity
    cached: str
    later: str


def load_pairs(path: str | Path) -> list[Pair]:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r and not r[0].startswith("#")]
    if rows[0] != ["label", "kind", "cached", "later"]:
        raise ValueError(f"{path}: the header must be label, kind, cached, later")
    pairs = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 4 or row[0] not in ("hit", "miss"):
            raise ValueError(f"{path}: row {number} is not label (hit|miss), kind, cached, later")
        pairs.append(Pair(row[0] == "hit", row[1], row[2], row[3]))
    return pairs


class MemoEmbedder:
    """Embeds each text once (a sweep asks for the same texts many times)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.vectors: dict[str, np.ndarray] = {}

    async def warm(self, texts: list[str]) -> None:
        todo = sorted({t for t in texts if t not in self.vectors})
        if todo:
            for text, vector in zip(todo, await embed(self.embedder, todo), strict=True):
                self.vectors[text] = vector

    async def __call__(self, texts: list[str]) -> np.ndarray:
        await self.warm(texts)
        return np.stack([self.vectors[t] for t in texts])


def query(text: str, owner: str | None, policy: CachePolicy):
    return build_query(
        model="m:1",
        model_fingerprint="",
        endpoint="/v1/completions",
        parameters={"temperature": 0, "max_tokens": 16},
        prompt=text,
        owner=owner,
        share=False,
        policy=policy,
    )


async def predicted_hits(
    pairs: list[Pair],
    embedder: MemoEmbedder,
    threshold: float,
    guard: bool = True,
    later_owner: str | None = "key_a",
) -> list[bool]:
    """For each pair: the first prompt cached by key_a, then whether the
    second, asked by ``later_owner``, is served from it."""
    await embedder.warm([t for p in pairs for t in (p.cached, p.later)])
    policy = CachePolicy(mode="semantic", threshold=threshold)
    answer = Answer(["an answer"], ["stop"], 5, 2)
    out = []
    for pair in pairs:
        cache = ResponseCache(MemoryBackend(10), embedder, guard=guard)
        first = query(pair.cached, "key_a", policy)
        await cache.store(first, await cache.lookup(first), answer, "req_1")
        out.append((await cache.lookup(query(pair.later, later_owner, policy))).hit)
    return out


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def scores(pairs: list[Pair], hits: list[bool]) -> dict[str, object]:
    tp = sum(h and p.should_hit for p, h in zip(pairs, hits, strict=True))
    fp = sum(h and not p.should_hit for p, h in zip(pairs, hits, strict=True))
    positives = sum(p.should_hit for p in pairs)
    negatives = len(pairs) - positives
    precision = tp / (tp + fp) if tp + fp else 1.0
    return {
        "true_hits": tp,
        "false_hits": fp,
        "positives": positives,
        "negatives": negatives,
        "precision": precision,
        "precision_ci95": wilson(tp, tp + fp),
        "recall": tp / positives if positives else 0.0,
        "false_hit_rate": fp / negatives if negatives else 0.0,
        "false_hits_by_kind": sorted(
            {p.kind for p, h in zip(pairs, hits, strict=True) if h and not p.should_hit}
        ),
    }
