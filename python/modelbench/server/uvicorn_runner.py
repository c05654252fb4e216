"""Running the app under uvicorn with a graceful drain, and bounds on slow
or greedy clients (``uvicorn_config``).

On the first SIGTERM or SIGINT the server stops admitting work (new requests
get 503, /ready turns 503 "draining", /health and /metrics keep answering),
lets the requests in flight finish for up to ``Settings.drain_timeout_s``,
then shuts down and the process exits 0. A second signal exits at once.

uvicorn by itself closes the listening socket on the first signal, so a load
balancer sees connection errors rather than a clear 503; hence our own
``uvicorn.Server`` subclass.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from modelbench.config import Settings
from modelbench.server.http_protocol import bounded_protocol
from modelbench.server.log import log_config

logger = logging.getLogger("modelbench.server")

# Once the drain is over (idle, or out of time), what is still running gets
# this long to end before uvicorn cancels it.
SHUTDOWN_GRACE_S = 2
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this long


class DrainingServer(uvicorn.Server):
    """uvicorn's Server whose exit signal drains ``app`` first."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signalled = False
        self._drain_task: asyncio.Task | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler: only set flags and wake the loop. The
        # signal is not recorded for uvicorn to re-raise after shutdown, which
        # would turn a clean drain into death by SIGTERM (exit code 143).
        if self._signalled or self._loop is None:
            self.should_exit = True
            self.force_exit = True
            if self._loop is not None:  # no drain goes on (nor says it drained)
                self._loop.call_soon_threadsafe(self.stop_drain)
            return
        self._signalled = True
        logger.info(
            "%s received: draining for up to %.0f s", signal.Signals(sig).name, self.drain_timeout_s
        )
        self._loop.call_soon_threadsafe(self.begin_drain)

    def begin_drain(self) -> None:
        """Start draining (idempotent); the server exits when it is done."""
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())

    def stop_drain(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()

    async def drain(self) -> None:
        state = self.app.state
        state.draining = True
        if await state.traffic.wait_idle(self.drain_timeout_s):
            logger.info("drained: no request in flight; shutting down")
        else:
            logger.warning(
                "drain timeout (%.0f s): %d requests still in flight are cut off",
                self.drain_timeout_s,
                state.traffic.num_in_flight,
            )
        self.should_exit = True


def quiet_garbage_collector() -> None:
    """Move what is loaded so far (modules, the app, the models' Python
    objects) out of the collector's reach, and collect the young generation
    less often. A request allocates thousands of short-lived objects, so
    with the default thresholds the collector ran every few requests and a
    full collection walked the whole heap: under load that was the p99. With
    these settings the gateway's overhead benchmark went from 977 to about
    1,300 requests/s and its p99 at 32 concurrent requests from 191 to 42 ms
    (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000)


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves ``app``: the logging ``settings`` asks for, and the
    bounds on clients (server/http_protocol.py: head size, head and body
    timeouts; an idle kept-alive connection closes after KEEP_ALIVE_S).
    X-Forwarded-For is believed from ``settings.forwarded_allow_ips`` only,
    never from uvicorn's FORWARDED_ALLOW_IPS environment variable: set to "*"
    it would let any client claim a loopback address."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=bounded_protocol(settings),
        log_config=log_config(settings),
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


def serve(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` on ``settings.host:port`` until a signal drains it, with
    the logging ``settings`` asks for. Exits 3 when the server cannot start."""
    server = DrainingServer(uvicorn_config(app, settings), app, settings.drain_timeout_s)
    quiet_garbage_collector()
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: the port is taken, or startup raised
