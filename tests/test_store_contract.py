"""What every store must do alike, run against SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.events import Event
from hub.store.base import ApiKey, Store
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SQLiteStore
from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    published: list[Event] = []
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "hub.db", published.extend, synchronous="NORMAL")
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    async for url in fresh_database():
        postgres = PostgresStore(url, published.extend)
        await postgres.open()
        yield postgres
        await postgres.close()


def api_key(key_id: str, secret: str, label: str | None = None) -> ApiKey:
    digest = hashlib.sha256(secret.encode()).digest()
    return ApiKey(key_id, digest.hex()[:32], digest, label, time.time())


async def test_api_keys_are_found_by_hash_until_revoked(store: Store) -> None:
    first, second = api_key("key_1", "secret-1", "ci"), api_key("key_2", "secret-2")
    await store.add_api_key(first)
    await store.add_api_key(second)
    assert await store.api_key_owner(first.hash) == first.owner
    assert await store.api_key_owner(hashlib.sha256(b"nope").digest()) is None
    assert [k.id for k in await store.list_api_keys()] == ["key_1", "key_2"]

    assert await store.revoke_api_key("key_1", time.time())
    assert not await store.revoke_api_key("key_1", time.time())  # already revoked
    assert not await store.revoke_api_key("key_9", time.time())  # no such key
    assert await store.api_key_owner(first.hash) is None
    assert await store.api_key_owner(second.hash) == second.owner
    listed = {k.id: k for k in await store.list_api_keys()}
    assert listed["key_1"].revoked_at is not None and listed["key_1"].label == "ci"
    assert listed["key_2"].revoked_at is None
