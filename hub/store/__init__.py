"""Durable state. One interface (``base.Store``): SQLite by default, PostgreSQL for
replicas (``HUB_DATABASE_URL=postgresql://...``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hub.background.loops import Health
from hub.config.settings import Settings
from hub.store.base import Event, Store


def open_store(
    settings: Settings,
    on_commit: Callable[[Sequence[Event]], None],
    on_fatal: Callable[[BaseException], None] | None = None,
    health: Health | None = None,
) -> Store:
    """The store for ``settings.database_url``; ``on_commit`` gets new events in id order
    (with PostgreSQL, every replica's); ``on_fatal`` hears of a failure after which the
    store takes nothing more (SQLite: an fsync that failed)."""
    if settings.postgres:
        from hub.store.postgres import PostgresStore

        return PostgresStore(settings.database_url, on_commit, health)
    from hub.store.sqlite import SQLiteStore

    return SQLiteStore(
        settings.sqlite_path, on_commit, synchronous=settings.sqlite_synchronous, on_fatal=on_fatal
    )
