"""RecordWriter: request records written off the request's hot path.

Requests hand their finished record to ``submit`` (O(1), never blocks, never
raises). A background thread takes what has accumulated, up to ``batch_size``
rows, and inserts it in one transaction. When the store is down, the rows
stay in the buffer and the thread retries with backoff (0.25 s doubling to
10 s); nothing is lost while the buffer holds. When the buffer is full a new
record is dropped, counted in ``num_dropped`` (a metric) and logged: a store
outage never fails or slows an inference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from modelbench.db.tables import RequestRecord

logger = logging.getLogger("modelbench.store")

# A row's key (never a column) holding the span context of its request, which
# the write's span links to when tracing is on (modelbench/tracing.py).
TRACE_LINK = "_trace_link"


class RecordWriter:
    def __init__(
        self,
        engine: Engine,
        max_buffer: int = 10_000,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        paused: bool = False,
    ) -> None:
        self.engine = engine
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.num_written = 0
        self.num_dropped = 0
        self.num_failed_flushes = 0
        self.store_up = True
        self.tracer: Any = None  # an OpenTelemetry Tracer when tracing is on
        self._buffer: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._in_flight = False  # rows taken from the buffer and not yet written
        # Paused: buffer only, until resume() (the tables may not exist yet).
        self._resumed = threading.Event()
        if not paused:
            self._resumed.set()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(
            target=self._run, name="modelbench-record-writer", daemon=True
        )
        self._thread.start()

    @property
    def num_buffered(self) -> int:
        return len(self._buffer)

    def submit(self, row: dict[str, Any]) -> bool:
        """Queue one ``requests`` row; False (and counted) when the buffer is full."""
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                self.num_dropped += 1
                dropped = self.num_dropped
            else:
                self._buffer.append(row)
                dropped = 0
        if dropped:
            # Log the first drop of an outage and then every 1,000th, not a line per request.
            if dropped == 1 or dropped % 1000 == 0:
                logger.error(
                    "request record buffer full (%d rows): %d records dropped so far",
                    self.max_buffer,
                    dropped,
                )
            return False
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        if not self._resumed.wait(timeout_s):  # nothing is written before resume()
            return not self._buffer
        self._wake.set()
        with self._idle:
            while self._buffer or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.05))
                self._wake.set()
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered (up to the timeout), then stop the thread."""
        self.flush(timeout_s)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=timeout_s)
        if self._buffer:
            logger.error("closing the record writer with %d records unwritten", len(self._buffer))

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            n = min(self.batch_size, len(self._buffer))
            rows = [self._buffer[i] for i in range(n)]
            self._in_flight = bool(rows)
            return rows

    def resume(self) -> None:
        """Start writing (the store's tables exist now)."""
        self._resumed.set()
        self._wake.set()

    def _run(self) -> None:
        backoff = 0.25
        while not self._resumed.is_set():
            if self._stopping:
                return
            self._resumed.wait(0.1)
        while not self._stopping:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            while rows := self._take():
                try:
                    written = self._traced_insert(rows) if self.tracer else self._insert(rows)
                except SQLAlchemyError as exc:
                    with self._lock:
                        self._in_flight = False
                    self.num_failed_flushes += 1
                    if self.store_up:
                        logger.error(
                            "the store is unreachable; %d records buffered, retrying: %s",
                            len(self._buffer),
                            exc.__class__.__name__,
                        )
                    self.store_up = False
                    if self._stopping:
                        return
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                with self._lock:
                    for _ in rows:
                        self._buffer.popleft()
                    self._in_flight = False
                    self.num_written += written
                    self._idle.notify_all()
                if not self.store_up:
                    logger.warning(
                        "the store is back; writing %d buffered records", len(self._buffer)
                    )
                self.store_up, backoff = True, 0.25
            with self._lock:
                self._idle.notify_all()

    def _traced_insert(self, rows: list[dict[str, Any]]) -> int:
        """``_insert`` in a CLIENT span linked to the requests whose records it writes."""
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        links = [Link(row[TRACE_LINK]) for row in rows if row.get(TRACE_LINK) is not None]
        attributes = {
            "db.system.name": self.engine.dialect.name,
            "db.operation.name": "INSERT",
            "db.collection.name": RequestRecord.__tablename__,
            "db.operation.batch.size": len(rows),
        }
        with self.tracer.start_as_current_span(
            "INSERT requests",
            kind=SpanKind.CLIENT,
            links=links,
            attributes=attributes,
            record_exception=True,
            set_status_on_exception=False,
        ) as span:
            try:
                return self._insert(rows)
            except SQLAlchemyError as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        """Insert in one transaction (text made storable first: PostgreSQL
        refuses NUL characters, which a model may well generate). A row the database refuses (not an
        outage: a constraint, a value too long) must not hold the others back
        forever: then each row goes alone and the refused ones are dropped."""
        rows = [storable(row) for row in rows]
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(RequestRecord), rows)
            return len(rows)
        except DBAPIError as exc:
            if exc.connection_invalidated or is_outage(exc):
                raise
        written = 0
        for row in rows:
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(RequestRecord), [row])
                written += 1
            except DBAPIError as exc:
                if exc.connection_invalidated or is_outage(exc):
                    raise
                self.num_dropped += 1
                logger.error(
                    "the store refused request record %s, dropped: %s", row.get("id"), exc.orig
                )
        return written


def storable(row: dict[str, Any]) -> dict[str, Any]:
    """The row with NUL characters in its text replaced by U+FFFD (and no trace link)."""
    return {
        k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
        for k, v in row.items()
        if k != TRACE_LINK
    }


def is_outage(exc: DBAPIError) -> bool:
    """Errors that say the store is not reachable (retry later), as opposed
    to errors about the data (which retrying cannot fix)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))
