"""Per-key token buckets: requests per minute and tokens per minute.

A bucket holds up to ``limit`` units and refills at ``limit / 60`` per
second. A request takes one unit from the request bucket, or is refused with
the seconds until one is there. Tokens are charged after the request, from
what it really used (prompt and generated tokens, as the request log counts
them), so a bucket may go into debt; while it is in debt the key's new
requests are refused until it refills. The clock is injectable for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class Bucket:
    def __init__(self, limit_per_minute: int, clock: Callable[[], float]) -> None:
        self.capacity = float(limit_per_minute)
        self.rate = limit_per_minute / 60.0
        self.level = self.capacity
        self.clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, n: float = 1.0) -> float:
        """0 if ``n`` units were taken, else the seconds until they are there."""
        self._refill()
        if self.level >= n:
            self.level -= n
            return 0.0
        return (n - self.level) / self.rate

    def wait_out_debt(self) -> float:
        """0 unless the bucket is in debt, else the seconds until it is not."""
        self._refill()
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def is_full(self) -> bool:
        self._refill()
        return self.level >= self.capacity

    def charge(self, n: float) -> None:
        """Take ``n`` units, going into debt if need be."""
        self._refill()
        self.level -= n


@dataclass
class Refusal:
    limit: str  # "requests per minute" | "tokens per minute"
    value: int
    retry_after_s: int


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._requests: dict[str, Bucket] = {}
        self._tokens: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    MAX_BUCKETS = 10_000

    def _bucket(self, table: dict[str, Bucket], who: str, limit: int) -> Bucket:
        if len(table) >= self.MAX_BUCKETS and who not in table:
            self._prune(table)
        bucket = table.get(who)
        if bucket is None or bucket.capacity != limit:  # a key's limit changed: start afresh
            bucket = table[who] = Bucket(limit, self.clock)
        return bucket

    @staticmethod
    def _prune(table: dict[str, Bucket]) -> None:
        """Forget callers whose buckets have refilled: a full bucket is what a
        new one would be, so nothing is lost (open servers see many addresses)."""
        for who in [w for w, b in table.items() if b.is_full()]:
            del table[who]

    def admit(self, who: str, rpm: int | None, tpm: int | None) -> Refusal | None:
        """Count a request for ``who``, or say why not and when to retry."""
        with self._lock:
            if tpm is not None:
                wait = self._bucket(self._tokens, who, tpm).wait_out_debt()
                if wait > 0:
                    return Refusal("tokens per minute", tpm, math.ceil(wait))
            if rpm is not None:
                wait = self._bucket(self._requests, who, rpm).take(1)
                if wait > 0:
                    return Refusal("requests per minute", rpm, math.ceil(wait))
        return None

    def charge_tokens(self, who: str, tpm: int | None, tokens: int) -> None:
        if tpm is None or tokens <= 0:
            return
        with self._lock:
            self._bucket(self._tokens, who, tpm).charge(tokens)
