"""Routing policies: the order in which the replicas of one model name are
tried. The first replica is the choice; the rest are the retry and failover
candidates, in order. Unavailable replicas are never returned, so an empty
list means none is available and the caller decides what to do.

Also the latency score the least-latency policy reads (``LatencyAverage``)."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, get_args

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

Policy = Literal[
    "round-robin", "least-outstanding", "least-latency", "weighted", "pinned", "affinity"
]
POLICIES: tuple[Policy, ...] = get_args(Policy)

# The per-token time counts for this many tokens in the latency score: a
# typical short chat answer, so time to first token and decode speed both
# matter without the score turning into a long-generation benchmark.
TYPICAL_ANSWER_TOKENS = 16


class Replica(Protocol):
    """What the policies read of one replica (an upstream serving the name)."""

    @property
    def id(self) -> str: ...

    @property
    def weight(self) -> float:
        """Share of traffic under ``weighted``; 0 is never a first choice."""
        ...

    @property
    def outstanding(self) -> int:
        """Requests in flight to it now."""
        ...

    @property
    def available(self) -> bool:
        """Healthy and its breaker allows a request."""
        ...

    @property
    def latency_ms(self) -> float | None:
        """``LatencyAverage.score_ms``; None while nothing has been measured."""
        ...


R = TypeVar("R", bound=Replica)


class LatencyAverage:
    """Exponentially weighted moving averages of time to first token and time
    per output token, combined into one score:
    ``score_ms = ttft_ms + tpot_ms * TYPICAL_ANSWER_TOKENS``.

    The first observation is taken as is (no pull towards zero); each later
    one moves the average by ``alpha`` of the difference."""

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._ttft_ms: float | None = None
        self._tpot_ms: float | None = None

    def observe(self, ttft_ms: float, tpot_ms: float | None, num_tokens: int) -> None:
        """One finished request: its time to first token, its mean time per
        output token after the first (None when there was none), and how many
        tokens it generated. The per-token time needs at least two tokens to
        mean anything, so it is skipped below that."""
        if ttft_ms < 0:
            raise ValueError(f"ttft_ms must be >= 0, got {ttft_ms}")
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        self._ttft_ms = self._update(self._ttft_ms, ttft_ms)
        if tpot_ms is not None and num_tokens >= 2:
            if tpot_ms < 0:
                raise ValueError(f"tpot_ms must be >= 0, got {tpot_ms}")
            self._tpot_ms = self._update(self._tpot_ms, tpot_ms)

    @property
    def ttft_ms(self) -> float | None:
        """The average time to first token; None before the first observation."""
        return self._ttft_ms

    @property
    def tpot_ms(self) -> float | None:
        """The average time per output token; None before one was measured."""
        return self._tpot_ms

    @property
    def score_ms(self) -> float | None:
        """Lower is faster; None before the first observation. A replica that
        has only answered single tokens is scored on its time to first token."""
        if self._ttft_ms is None:
            return None
        return self._ttft_ms + (self._tpot_ms or 0.0) * TYPICAL_ANSWER_TOKENS

    def _update(self, average: float | None, value: float) -> float:
        if average is None:
            return value
        return average + self.alpha * (value - average)


class Router:
    """Orders the replicas of one model name under one policy. Keeps the
    round-robin counter, so use one Router per name for the gateway's life.

    - round-robin: rotate through the available replicas.
    - least-outstanding: fewest requests in flight first; ties take turns.
    - least-latency: unmeasured replicas first (so each gets measured), then
      lowest ``latency_ms``; ties by fewest outstanding, then take turns.
    - weighted: first choice drawn in proportion to weight (weight 0 never
      first); the rest by weight, heaviest first.
    - pinned: the order given, the first declared replica being the pinned one.
    - affinity: rendezvous hashing of ``key`` with each replica id, so a key
      stays on its replica while that is available and only the keys of a
      replica that goes away move; without a key, least-outstanding."""

    def __init__(self, policy: Policy, rng: random.Random | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._next = 0  # where the next rotation starts

    def order(self, replicas: Sequence[R], key: str | None = None) -> list[R]:
        """The available replicas, first choice first; ``key`` (e.g. a session
        or prefix hash) is read only by ``affinity``."""
        available = [r for r in replicas if r.available]
        if not available:
            return []
        if self.policy == "round-robin":
            return self._rotated(available)
        if self.policy == "least-outstanding":
            return self._least_outstanding(available)
        if self.policy == "least-latency":
            return self._sorted_taking_turns(
                available,
                key=lambda r: (r.latency_ms is not None, r.latency_ms or 0.0, r.outstanding),
            )
        if self.policy == "weighted":
            return self._weighted(available)
        if self.policy == "pinned":
            return available
        if key is None:
            return self._least_outstanding(available)
        return sorted(available, key=lambda r: _rendezvous_score(key, r.id), reverse=True)

    def _rotated(self, replicas: list[R]) -> list[R]:
        turn = self._next
        self._next += 1
        return _rotate(replicas, turn)

    def _least_outstanding(self, replicas: list[R]) -> list[R]:
        return self._sorted_taking_turns(replicas, key=lambda r: r.outstanding)

    def _sorted_taking_turns(
        self, replicas: list[R], key: Callable[[R], SupportsRichComparison]
    ) -> list[R]:
        """Sorted by ``key``, each run of equal keys rotated by the turn, so
        equally good replicas share the load instead of the first declared one
        taking it all. (Rotating the whole list before sorting would not be
        even: the replica after a busy one would get its turns too.)"""
        turn = self._next
        self._next += 1
        ordered: list[R] = []
        for _, equal in itertools.groupby(sorted(replicas, key=key), key=key):
            ordered += _rotate(list(equal), turn)
        return ordered

    def _weighted(self, replicas: list[R]) -> list[R]:
        by_weight = sorted(replicas, key=lambda r: r.weight, reverse=True)
        weighted = [r for r in replicas if r.weight > 0]
        if not weighted:
            return by_weight
        first = self._rng.choices(weighted, weights=[r.weight for r in weighted])[0]
        return [first, *(r for r in by_weight if r is not first)]


def _rotate(replicas: list[R], turn: int) -> list[R]:
    start = turn % len(replicas)
    return replicas[start:] + replicas[:start]


def _rendezvous_score(key: str, replica_id: str) -> int:
    """A stable pseudo-random score of the pair (blake2b, not ``hash()``, which
    is salted per process): the key goes to the replica that scores highest."""
    digest = hashlib.blake2b(f"{key}\0{replica_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
