"""The server's view of the store: the database engine, the record writer,
the job queue and the in-server worker, opened and closed with the app.

Everything here talks to the database from worker threads
(``asyncio.to_thread``) or the writer's own thread: the event loop never
waits on the database."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from modelbench.config import Settings
from modelbench.db import make_engine, upgrade
from modelbench.db.writer import RecordWriter
from modelbench.jobs.queue import JobQueue
from modelbench.jobs.worker import Worker

logger = logging.getLogger("modelbench.store")


@dataclass
class Store:
    url: str
    engine: Engine
    writer: RecordWriter
    queue: JobQueue
    settings: Settings
    # Lets the in-server worker's requests through auth, as the batch's owner.
    internal_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    worker: Worker | None = None
    is_migrated: bool = False
    migration_failed: bool = False  # an attempt failed (it is retried): the store is down
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """Connect lazily: a store that is down at start delays records and
        batch jobs, never inference. ``start`` migrates and starts writing."""
        url = settings.store_url()
        engine = make_engine(url)
        writer = RecordWriter(engine, max_buffer=settings.record_buffer, paused=True)
        return cls(url, engine, writer, JobQueue(engine), settings)

    def start(self, app: object) -> None:
        self._tasks.append(asyncio.create_task(self._start(app)))

    async def _start(self, app: object) -> None:
        shown = make_url(self.url).render_as_string(hide_password=True)
        delay = 1.0
        while self.settings.db_auto_migrate and not self._stop.is_set():
            try:
                await asyncio.to_thread(upgrade, self.url)
                break
            except Exception as exc:
                self.migration_failed = True
                logger.error(
                    "store %s: migrations failed (%s: %s); retrying in %.0f s",
                    shown,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)
        if self._stop.is_set():
            return
        self.is_migrated = True
        self.writer.resume()
        logger.info("store: %s", shown)
        if self.settings.run_worker:
            s = self.settings
            self.worker = Worker(
                self.queue,
                app,  # type: ignore[arg-type]
                concurrency=s.worker_concurrency,
                lease_s=s.job_lease_s,
                internal_token=self.internal_token,
                is_ready=lambda: can_run_jobs(app),
            )
            await self.worker.run(self._stop)

    async def close(self) -> None:
        """Stop the worker (its running jobs finish), write what is buffered."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.writer.close)
        self.engine.dispose()


def can_run_jobs(app: object) -> bool:
    """No model the server was started with is still loading (failed ones
    count as settled; an admin's load at run time does not hold jobs back),
    and the server is not draining: a job claimed now would only be refused
    with 503 and use up an attempt."""
    state = app.state  # type: ignore[attr-defined]
    if getattr(state, "draining", False):
        return False
    return not state.registry.is_starting()


class StoreCollector(Collector):
    """The request log's health at scrape time: records written, waiting in
    the buffer (the store is slow or down), and dropped (the buffer was full,
    or the store refused a row)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        writer = self.store.writer
        yield CounterMetricFamily(
            "modelbench:request_records_written",
            "Request records written to the store.",
            value=writer.num_written,
        )
        yield CounterMetricFamily(
            "modelbench:request_records_dropped",
            "Request records lost: the buffer was full or the store refused them.",
            value=writer.num_dropped,
        )
        yield GaugeMetricFamily(
            "modelbench:request_records_buffered",
            "Request records waiting to be written.",
            value=writer.num_buffered,
        )
        yield GaugeMetricFamily(
            "modelbench:store_up",
            "1 if the last write to the store succeeded.",
            value=1.0 if writer.store_up else 0.0,
        )
