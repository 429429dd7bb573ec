"""Which store errors are the store's state (503, wait it out) and which are bugs (500) or
fatal (a failed fsync). The full-disk and dropped-connection floods against `hub serve`
are in tests/behaviour/test_store_faults.py."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from hub.enums import EventType
from hub.store.base import EventQuery, NewEvent, StoreUnavailable
from hub.store.faults import (
    SQLITE_IOERR_FSYNC,
    postgres_transient,
    sqlite_fsync_failed,
    sqlite_transient,
)
from hub.store.sqlite import SQLiteStore


def sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


def test_a_full_disk_or_io_error_is_waited_out_and_a_failed_fsync_is_not():
    assert sqlite_transient(sqlite_error(13, "database or disk is full"))
    assert sqlite_transient(sqlite_error(10 | (3 << 8), "disk I/O error"))  # IOERR_WRITE
    assert sqlite_transient(sqlite_error(5, "database is locked"))
    fsync = sqlite_error(SQLITE_IOERR_FSYNC, "disk I/O error")
    assert sqlite_fsync_failed(fsync) and not sqlite_transient(fsync)
    assert not sqlite_transient(sqlite_error(1, "no such table: nowhere"))
    assert not sqlite_transient(sqlite3.IntegrityError("UNIQUE constraint failed"))


def test_a_lost_postgres_connection_is_waited_out_and_a_bug_is_not():
    assert postgres_transient(asyncpg.exceptions.AdminShutdownError("terminating"))
    assert postgres_transient(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert postgres_transient(asyncpg.exceptions.DiskFullError("no space"))
    assert postgres_transient(asyncpg.InterfaceError("connection is closed"))
    assert postgres_transient(ConnectionRefusedError(111, "refused"))
    assert not postgres_transient(asyncpg.exceptions.UniqueViolationError("duplicate"))
    assert not postgres_transient(asyncpg.exceptions.PostgresSyntaxError("syntax"))


async def test_writes_beyond_the_database_size_limit_are_unavailable_then_work(tmp_path):
    """The file cannot grow (``max_page_count`` on the writer's connection, this test's
    stand-in for a full disk): 503 for the writes, and writes work again once it can."""
    store = SQLiteStore(tmp_path / "hub.db", lambda events: None)
    await store.open()
    try:
        writer = store._writer
        assert writer is not None and writer._db is not None
        db = writer._db
        pages = await writer._call(lambda: db.execute("PRAGMA page_count").fetchone()[0])
        await writer._call(db.execute, f"PRAGMA max_page_count={pages}")
        big = NewEvent(EventType.WEBHOOK_FAILING, b'"' + b"x" * 200_000 + b'"', channel_id="c")
        with pytest.raises(StoreUnavailable) as refused:
            await store.add_events([big])
        assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
        await writer._call(db.execute, "PRAGMA max_page_count=1073741823")
        [event] = await store.add_events([big])
        [stored] = await store.events_after(EventQuery(channel_id="c"), event.id - 1, 1)
        assert stored.data == big.data
    finally:
        await store.close()


async def test_an_fsync_sqlite_reports_failed_stops_the_store(tmp_path, monkeypatch):
    """SQLite's own fsync failing (SQLITE_IOERR_FSYNC on a commit) is as fatal as the
    WAL's: nothing more is taken and the owner is told, as for test_fsync_failure.py."""
    fatal: list[BaseException] = []
    store = SQLiteStore(tmp_path / "hub.db", lambda events: None, on_fatal=fatal.append)
    await store.open()
    try:
        writer = store._writer
        assert writer is not None

        def failing(batch: object, ids: object) -> list[object]:
            raise sqlite_error(SQLITE_IOERR_FSYNC, "disk I/O error")

        monkeypatch.setattr(writer, "_commit_in_thread", failing)
        event = NewEvent(EventType.WEBHOOK_FAILING, b"{}", channel_id="c")
        with pytest.raises(StoreUnavailable):
            await store.add_events([event])
        monkeypatch.undo()
        assert len(fatal) == 1 and sqlite_fsync_failed(fatal[0])
        with pytest.raises(StoreUnavailable):
            await store.add_events([event])
    finally:
        await store.close()
