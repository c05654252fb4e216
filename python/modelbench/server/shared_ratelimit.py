"""Rate limits that several server or gateway processes share through Redis
(``--redis-url``), with server/ratelimit.py's semantics: per caller, a
request bucket and a token bucket of ``limit`` units refilling at
``limit / 60`` per second; a request takes one request unit, or is refused
with the seconds until one is there, and is refused while the token bucket
is in debt; tokens are charged when the request ends.

Each bucket is a Redis hash (``level``, ``updated``, ``capacity``) changed by
one Lua script per admission and per charge, so the check and the take are
atomic across processes; time is Redis's own clock, which every process
shares. A bucket expires once it would have refilled: a full bucket is what
a new one would be. When Redis does not answer, the process's own
``RateLimiter`` decides instead (each process then grants the whole budget
on its own), until Redis is back."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import redis.asyncio as aioredis

from modelbench.gateway.shared_state import SharedState, SharedStateUnavailable
from modelbench.server.ratelimit import RateLimiter, Refusal

# Shared by both scripts: the time, and a bucket's level refilled up to now.
BUCKET = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function refill(key, capacity)
  local b = redis.call('HMGET', key, 'level', 'updated', 'capacity')
  local level, updated = tonumber(b[1]), tonumber(b[2])
  if level == nil or tonumber(b[3]) ~= capacity then  -- new, or the limit changed: start afresh
    level, updated = capacity, now
  end
  return math.min(capacity, level + math.max(0, now - updated) * capacity / 60)
end

local function store(key, capacity, level)
  redis.call('HSET', key, 'level', string.format('%.17g', level),
             'updated', string.format('%.17g', now), 'capacity', capacity)
  local full_in_ms = (capacity - level) / (capacity / 60) * 1000
  redis.call('PEXPIRE', key, math.ceil(full_in_ms) + 1000)
end
"""

# KEYS: the caller's token bucket, its request bucket; ARGV: tokens and
# requests per minute, "" for unlimited. Returns {} when admitted, else
# {limit, seconds to wait}.
ADMIT = (
    BUCKET
    + """
local tpm, rpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm then
  local level = refill(KEYS[1], tpm)
  if level < 0 then
    return {'tpm', string.format('%.17g', -level / (tpm / 60))}
  end
end
if rpm then
  local level = refill(KEYS[2], rpm)
  if level < 1 then
    return {'rpm', string.format('%.17g', (1 - level) / (rpm / 60))}
  end
  store(KEYS[2], rpm, level - 1)
end
return {}
"""
)

# KEYS: the caller's token bucket; ARGV: tokens per minute, tokens to charge.
CHARGE = (
    BUCKET
    + """
local tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
store(KEYS[1], tpm, refill(KEYS[1], tpm) - tokens)
return 0
"""
)


def bucket_keys(who: str) -> list[str]:
    """The token and request buckets of ``who``; the braces keep both in one
    Redis Cluster slot, as a script's keys must be."""
    return [f"modelbench:ratelimit:{{{who}}}:tokens", f"modelbench:ratelimit:{{{who}}}:requests"]


class SharedRateLimiter:
    """``RateLimiter``'s two calls over Redis, falling back to ``local``."""

    def __init__(self, shared: SharedState, local: RateLimiter) -> None:
        self.shared = shared
        self.local = local
        self._admit = shared.client.register_script(ADMIT)
        self._charge = shared.client.register_script(CHARGE)
        self._charging: set[asyncio.Task[None]] = set()

    async def admit(self, who: str, rpm: int | None, tpm: int | None) -> Refusal | None:
        """Count a request for ``who``, or say why not and when to retry."""
        if rpm is None and tpm is None:
            return None
        args = ["" if tpm is None else tpm, "" if rpm is None else rpm]

        def run(client: aioredis.Redis) -> Any:
            return self._admit(keys=bucket_keys(who), args=args, client=client)

        try:
            answer = await self.shared.call(run)
        except SharedStateUnavailable:
            return self.local.admit(who, rpm, tpm)
        if not answer:
            return None
        limit, wait_s = answer
        retry_after_s = math.ceil(float(wait_s))
        if limit == "tpm":
            assert tpm is not None, "only a token limit refuses for tokens"
            return Refusal("tokens per minute", tpm, retry_after_s)
        assert rpm is not None, "only a request limit refuses for requests"
        return Refusal("requests per minute", rpm, retry_after_s)

    def charge_tokens(self, who: str, tpm: int | None, tokens: int) -> None:
        """Charge in the background: the request has ended, and nothing waits on it."""
        if tpm is None or tokens <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the server's event loop: no Redis from here
            self.local.charge_tokens(who, tpm, tokens)
            return
        task = loop.create_task(self._charge_shared(who, tpm, tokens))
        self._charging.add(task)
        task.add_done_callback(self._charging.discard)

    async def _charge_shared(self, who: str, tpm: int, tokens: int) -> None:
        def run(client: aioredis.Redis) -> Any:
            return self._charge(keys=bucket_keys(who)[:1], args=[tpm, tokens], client=client)

        try:
            await self.shared.call(run)
        except SharedStateUnavailable:
            self.local.charge_tokens(who, tpm, tokens)

    async def flush(self) -> None:
        """Wait for the charges under way (tests, and shutdown)."""
        await asyncio.gather(*self._charging, return_exceptions=True)
