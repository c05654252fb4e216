"""Several gateway processes sharing rate limits and breaker states through a
real Redis (Debian's ``redis-server``, started here on a free port), and
going on alone when it goes away.

In-process objects where that keeps a test fast (two limiters, two sets of
breakers, each with its own connection); ``modelbench gateway`` processes
with ``--redis-url`` in front of faulty_upstream processes for the whole path."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from modelbench.gateway.breaker import BreakerState
from modelbench.gateway.config import GatewayOptions, UpstreamConfig
from modelbench.gateway.service import Gateway
from modelbench.gateway.shared_breakers import SharedBreakers
from modelbench.gateway.shared_state import SharedState, redact_url
from modelbench.server.ratelimit import RateLimiter, Refusal
from modelbench.server.shared_ratelimit import SharedRateLimiter

from ..redis_server import RedisServer
from .test_gateway_faults import Gateway as GatewayProcess
from .test_gateway_faults import Upstream, wait_until

WARNING = "redis unavailable at"
RECOVERED = "answers again"


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://app:s3cret@cache/1") == "redis://app:***@cache/1"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_a_bad_redis_url_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="redis url http://:\\*\\*\\*@x/0"):
        SharedState("http://:pw@x/0")


# Two processes' limiters: each has its own connection and its own local fallback.


def test_two_limiters_share_one_request_budget(redis_server: RedisServer) -> None:
    async def run() -> tuple[list[Refusal | None], RateLimiter]:
        states = [SharedState(redis_server.url) for _ in range(2)]
        local = RateLimiter()
        limiters = [
            SharedRateLimiter(states[0], local),
            SharedRateLimiter(states[1], RateLimiter()),
        ]
        answers = [await limiters[i % 2].admit("ip:1", rpm=5, tpm=None) for i in range(6)]
        answers.append(await limiters[1].admit("ip:2", rpm=5, tpm=None))  # buckets are per caller
        for state in states:
            await state.close()
        return answers, local

    answers, local = asyncio.run(run())
    assert answers[:5] == [None] * 5
    assert answers[5] == Refusal("requests per minute", 5, 12)  # one request refills in 12 s
    assert answers[6] is None
    assert not local._requests  # Redis decided; the fallback was never asked


def test_token_debt_run_up_in_one_process_refuses_in_the_other(redis_server: RedisServer) -> None:
    async def run() -> Refusal | None:
        a, b = SharedState(redis_server.url), SharedState(redis_server.url)
        first = SharedRateLimiter(a, RateLimiter())
        second = SharedRateLimiter(b, RateLimiter())
        assert await first.admit("k", rpm=None, tpm=60) is None
        first.charge_tokens("k", 60, 90)  # 30 tokens in debt
        await first.flush()
        refusal = await second.admit("k", rpm=None, tpm=60)
        await a.close()
        await b.close()
        return refusal

    refusal = asyncio.run(run())
    assert refusal is not None and refusal.limit == "tokens per minute"
    assert 29 <= refusal.retry_after_s <= 30  # 30 tokens at one a second


def test_without_redis_the_limiter_is_local_and_says_so_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> tuple[list[Refusal | None], list[bool]]:
        shared = SharedState(redis_server.url)
        limiter = SharedRateLimiter(shared, RateLimiter())
        await shared.check()
        available = [shared.available]
        redis_server.kill()
        answers = [await limiter.admit("k", rpm=2, tpm=None) for _ in range(3)]
        available.append(shared.available)
        redis_server.start()
        await shared.check()
        available.append(shared.available)
        await shared.close()
        return answers, available

    with caplog.at_level(logging.INFO, logger="modelbench.gateway"):
        answers, available = asyncio.run(run())
    assert answers[:2] == [None, None] and answers[2] is not None  # the local budget of 2
    assert available == [True, False, True]
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if WARNING in m]
    assert len(warnings) == 1, messages
    assert warnings[0].startswith(
        f"redis unavailable at {redis_server.url}: using local rate limits and breaker state"
    )
    assert sum(RECOVERED in m for m in messages) == 1


def test_a_breaker_opened_in_one_process_refuses_in_the_other(redis_server: RedisServer) -> None:
    options = GatewayOptions(breaker_failure_threshold=2, breaker_cooldown_s=2.0)
    upstreams = [UpstreamConfig(name="m", url="http://127.0.0.1:9/v1")]

    async def run() -> list[BreakerState]:
        seen = []
        sides = []
        for _ in range(2):
            shared = SharedState(redis_server.url)
            gateway = Gateway(upstreams, options)
            breakers = SharedBreakers(shared, gateway, interval_s=0.05)
            breakers.start()
            sides.append((shared, gateway, breakers))
        a = sides[0][1].pools["m"].replicas[0].breaker
        b = sides[1][1].pools["m"].replicas[0].breaker
        a.record_failure()
        a.record_failure()  # opens in A
        deadline = time.monotonic() + 1.0
        while b.state is not BreakerState.OPEN and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen.append(b.state)
        assert not b.allow() and 1.0 < b.retry_after_s() <= 2.0  # A's cooldown, not a new one
        await asyncio.sleep(2.0)  # the cooldown: both are half-open
        assert a.allow()  # A's probe
        a.record_success()  # closes A
        deadline = time.monotonic() + 1.0
        while b.state is not BreakerState.CLOSED and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen.append(b.state)
        seen.append(a.state)  # B's adopted close was not written back as news
        for shared, gateway, breakers in sides:
            await breakers.close()
            await gateway.close()
            await shared.close()
        return seen

    assert asyncio.run(run()) == [BreakerState.OPEN, BreakerState.CLOSED, BreakerState.CLOSED]


# Real gateway processes behind one (imagined) load balancer.

FAST = """
[gateway]
health_interval_s = 0.5
health_timeout_s = 0.5
breaker_failure_threshold = 2
breaker_cooldown_s = 3.0
backoff_base_s = 0.01
max_attempts = 4
"""


@pytest.fixture
def processes(
    tmp_path: Path,
) -> Iterator[tuple[Callable[..., Upstream], Callable[..., GatewayProcess]]]:
    started: list[Upstream | GatewayProcess] = []

    def upstream(mode: str = "ok") -> Upstream:
        started.append(Upstream(mode))
        return started[-1]  # type: ignore[return-value]

    def gateway(*args: str) -> GatewayProcess:
        started.append(GatewayProcess(list(args), FAST, tmp_path))
        return started[-1]  # type: ignore[return-value]

    yield upstream, gateway
    for process in reversed(started):
        if isinstance(process, GatewayProcess) and process.process.poll() is not None:
            continue  # stopped by the test, which read its log
        process.stop()


def shared_gauge(gateway: GatewayProcess) -> float:
    metrics = httpx.get(gateway.url + "/metrics", timeout=5).text
    found = re.search(r"^modelbench:shared_state_available (\S+)$", metrics, re.M)
    assert found, metrics
    return float(found.group(1))


def test_gateway_processes_share_one_rate_limit(
    redis_server: RedisServer, processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_upstream, start_gateway = processes
    monkeypatch.setenv("MODELBENCH_RATE_LIMIT_RPM", "5")
    up = start_upstream()
    a = start_gateway("--upstream", f"m={up.base}", "--redis-url", redis_server.url)
    b = start_gateway("--upstream", f"m={up.base}", "--redis-url", redis_server.url)
    answers = [(a, b)[i % 2].chat("m") for i in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429], [r.text for r in answers]
    assert answers[5].headers["retry-after"] == "12"
    assert "rate limit of 5 requests per minute" in answers[5].json()["error"]["message"]
    assert shared_gauge(a) == 1.0 and shared_gauge(b) == 1.0


def test_a_breaker_opened_in_one_gateway_process_is_obeyed_by_the_other(
    redis_server: RedisServer, processes
) -> None:
    start_upstream, start_gateway = processes
    good, bad = start_upstream(), start_upstream("error500")
    args = ("--upstream", f"m={bad.base}", "--upstream", f"m={good.base}")
    a = start_gateway(*args, "--redis-url", redis_server.url)
    b = start_gateway(*args, "--redis-url", redis_server.url)
    assert [a.chat("m").status_code for _ in range(4)] == [200] * 4  # retried on the good one
    assert a.upstreams()["m"]["replicas"][0]["breaker"]["state"] == "open"
    sent_to_bad = bad.stats()["requests"]
    wait_until(
        lambda: b.upstreams()["m"]["replicas"][0]["breaker"]["state"] == "open",
        1.5,
        "the other gateway to adopt the open breaker",
    )
    assert [b.chat("m").status_code for _ in range(6)] == [200] * 6
    assert bad.stats()["requests"] == sent_to_bad  # B never tried the open one

    bad.mode("ok")
    time.sleep(3.1)  # the cooldown: A's next request to it is the half-open probe
    for _ in range(4):
        assert a.chat("m").status_code == 200
    assert a.upstreams()["m"]["replicas"][0]["breaker"]["state"] == "closed"
    wait_until(
        lambda: b.upstreams()["m"]["replicas"][0]["breaker"]["state"] == "closed",
        1.5,
        "the other gateway to adopt the closed breaker",
    )


def test_gateways_serve_on_local_state_while_redis_is_away(
    redis_server: RedisServer, processes
) -> None:
    start_upstream, start_gateway = processes
    up = start_upstream()
    gateways = [
        start_gateway("--upstream", f"m={up.base}", "--redis-url", redis_server.url)
        for _ in range(2)
    ]
    assert all(shared_gauge(g) == 1.0 for g in gateways)

    redis_server.kill()
    for _ in range(5):
        assert all(g.chat("m").status_code == 200 for g in gateways)
    wait_until(lambda: all(shared_gauge(g) == 0.0 for g in gateways), 3, "the gauge to read 0")
    time.sleep(1.0)  # several failed pings: still one warning
    assert all(g.chat("m").status_code == 200 for g in gateways)

    redis_server.start()  # the same port
    wait_until(lambda: all(shared_gauge(g) == 1.0 for g in gateways), 3, "the gauge to read 1")
    assert all(g.chat("m").status_code == 200 for g in gateways)

    for g in gateways:
        log = g.stop()
        warnings = [line for line in log.splitlines() if WARNING in line]
        assert len(warnings) == 1, log
        assert (
            f"redis unavailable at {redis_server.url}: using local rate limits and breaker state"
            in warnings[0]
        )
        assert sum(RECOVERED in line for line in log.splitlines()) == 1, log
