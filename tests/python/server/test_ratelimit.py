"""Token buckets with a fake clock."""

from __future__ import annotations

from modelbench.server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert all(limiter.admit("k", rpm=3, tpm=None) is None for _ in range(3))
    refusal = limiter.admit("k", rpm=3, tpm=None)
    assert (
        refusal is not None
        and refusal.limit == "requests per minute"
        and refusal.retry_after_s == 20
    )
    clock.now += 19.0
    assert limiter.admit("k", rpm=3, tpm=None) is not None  # not yet
    clock.now += 1.5
    assert limiter.admit("k", rpm=3, tpm=None) is None
    assert limiter.admit("other", rpm=3, tpm=None) is None  # buckets are per caller
    assert limiter.admit("k", rpm=None, tpm=None) is None  # unlimited


def test_tokens_are_charged_after_and_block_while_in_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.admit("k", rpm=None, tpm=60) is None
    limiter.charge_tokens("k", 60, 90)  # 30 tokens in debt
    refusal = limiter.admit("k", rpm=None, tpm=60)
    assert (
        refusal is not None and refusal.limit == "tokens per minute" and refusal.retry_after_s == 30
    )
    clock.now += 31
    assert limiter.admit("k", rpm=None, tpm=60) is None
    clock.now += 1000
    limiter.charge_tokens("k", 60, 10)
    assert limiter.admit("k", rpm=None, tpm=60) is None  # refill stops at the capacity


def test_refilled_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limiter.MAX_BUCKETS = 100
    for i in range(100):
        limiter.admit(f"ip:{i}", rpm=60, tpm=None)
    clock.now += 60  # all refilled
    limiter.admit("ip:new", rpm=60, tpm=None)
    assert len(limiter._requests) == 1
