"""The batching record writer: rows reach the store; an outage loses nothing
while the buffer holds; overflow and refused rows are counted, not fatal."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from modelbench.db import make_engine, upgrade
from modelbench.db.tables import RequestRecord
from modelbench.db.writer import RecordWriter

from ..postgres import set_connections


def row(**fields: object) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "endpoint": "/v1/completions",
        "task": "generate",
        "status": "succeeded",
        "prompt": "hi",
        "output_text": "there",
        **fields,
    }


def count(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(RequestRecord)).scalar_one()


def test_rows_reach_the_store(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    writer = RecordWriter(engine, batch_size=64)
    try:
        rows = [row() for _ in range(300)]
        for r in rows:
            assert writer.submit(r)
        assert writer.flush()
        assert count(engine) == 300 and writer.num_written == 300 and writer.num_dropped == 0
        with engine.connect() as c:
            stored = c.execute(select(RequestRecord).where(RequestRecord.id == rows[7]["id"])).one()
        assert stored.prompt == "hi" and stored.created_at is not None and stored.stream is False
    finally:
        writer.close()
        engine.dispose()


def test_a_refused_row_does_not_hold_the_others(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    writer = RecordWriter(engine)
    try:
        first = row()
        writer.submit(first)
        assert writer.flush()
        batch = [row(), {**first}, row()]  # the middle one repeats a primary key
        for r in batch:
            writer.submit(r)
        assert writer.flush()
        assert count(engine) == 3 and writer.num_dropped == 1
    finally:
        writer.close()
        engine.dispose()


def test_an_outage_loses_nothing_while_the_buffer_holds(postgresql_url: str) -> None:
    upgrade(postgresql_url)
    dbname = postgresql_url.rsplit("/", 1)[1]
    engine = make_engine(postgresql_url)
    writer = RecordWriter(engine, max_buffer=1000, batch_size=50)
    try:
        for _ in range(20):
            writer.submit(row())
        assert writer.flush()
        set_connections(dbname, False)  # the store goes away
        for _ in range(500):
            assert writer.submit(row())  # accepted at once, while the store is down
        assert not writer.flush(timeout_s=1.5)
        assert not writer.store_up and writer.num_buffered == 500
        set_connections(dbname, True)  # and comes back
        assert writer.flush(timeout_s=30)
        assert writer.store_up and count(engine) == 520 and writer.num_dropped == 0
    finally:
        set_connections(dbname, True)
        writer.close()
        engine.dispose()


def test_overflow_is_counted(postgresql_url: str, caplog: pytest.LogCaptureFixture) -> None:
    upgrade(postgresql_url)
    dbname = postgresql_url.rsplit("/", 1)[1]
    engine = make_engine(postgresql_url)
    writer = RecordWriter(engine, max_buffer=10, batch_size=5)
    try:
        set_connections(dbname, False)
        accepted = [writer.submit(row()) for _ in range(15)]
        assert accepted.count(False) == 5 and writer.num_dropped == 5
        assert "records dropped" in caplog.text
        set_connections(dbname, True)
        assert writer.flush(timeout_s=30)
        assert count(engine) == 10
    finally:
        set_connections(dbname, True)
        writer.close()
        engine.dispose()


def test_text_with_nul_characters_is_stored(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    writer = RecordWriter(engine)
    try:
        r = row(prompt="a\x00b", output_text="\x00")
        writer.submit(r)
        assert writer.flush() and writer.num_dropped == 0
        with engine.connect() as c:
            stored = c.execute(select(RequestRecord).where(RequestRecord.id == r["id"])).one()
        assert stored.prompt == "a\ufffdb" and stored.output_text == "\ufffd"
    finally:
        writer.close()
        engine.dispose()
