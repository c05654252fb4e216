"""Failed authentications per client address, to slow down key guessing.

After ``max_failures`` failed authentications (no key, or a wrong or revoked
one) within ``window_s`` seconds, an address is refused with 429 until the
oldest of them leaves the window, whatever key it sends: a guesser learns
nothing more until then. Other addresses are not affected, and a success does
not clear the count (an attacker holding one plain key could otherwise
interleave it with guesses at an admin key).

Memory is bounded: at most ``max_failures`` times per address, and at most
``max_clients`` addresses, the least recently failing forgotten first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque


class AuthFailures:
    def __init__(
        self, max_failures: int = 10, window_s: float = 60.0, max_clients: int = 10_000
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError(
                "max_failures and max_clients must be >= 1 and window_s > 0, got "
                f"{max_failures}, {max_clients}, {window_s}"
            )
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._failed_at: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()  # routes run on the loop; sync ones in threads

    def __len__(self) -> int:
        return len(self._failed_at)

    def retry_after_s(self, client: str, now: float | None = None) -> int | None:
        """Seconds ``client`` must wait before trying again, or None if it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._failed_at.get(client)
            if times is None:
                return None
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if not times:
                del self._failed_at[client]
                return None
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window_s - now))

    def record(self, client: str, now: float | None = None) -> None:
        """One failed authentication from ``client``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._failed_at.get(client)
            if times is None:
                times = self._failed_at[client] = deque(maxlen=self.max_failures)
            else:
                self._failed_at.move_to_end(client)
            times.append(now)
            while len(self._failed_at) > self.max_clients:
                self._failed_at.popitem(last=False)
