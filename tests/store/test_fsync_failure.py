"""An fsync that fails stops the store for good: the writes it covered are not
acknowledged, nothing later is taken (503, not 500), the owner is told so it can end the
process, and the next start does not reuse an id a subscriber may have seen."""

from __future__ import annotations

import errno
import os

import pytest

from hub.enums import EventType
from hub.store.base import Event, NewEvent, StoreUnavailable
from hub.store.sqlite import SQLiteStore
from tests.helpers import AUTH


async def test_a_failed_fsync_answers_nothing_and_stops_the_writer(tmp_path, monkeypatch):
    fatal: list[BaseException] = []
    published: list[Event] = []
    store = SQLiteStore(tmp_path / "hub.db", published.extend, on_fatal=fatal.append)
    await store.open()
    try:
        event = NewEvent(EventType.WEBHOOK_FAILING, b"{}", channel_id="ch")
        assert len(await store.add_events([event])) == 1

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken)
        with pytest.raises(StoreUnavailable):
            await store.add_events([event])
        monkeypatch.undo()
        assert len(fatal) == 1 and isinstance(fatal[0], OSError)
        # Nothing more is taken, even once fsync would work again.
        with pytest.raises(StoreUnavailable):
            await store.add_events([event])
    finally:
        await store.close()
    # The last run did not end cleanly: ids skip past what subscribers may have seen.
    again = SQLiteStore(tmp_path / "hub.db", lambda events: None)
    await again.open()
    try:
        [after] = await again.add_events([event])
        assert after.id > max(e.id for e in published) + 1
    finally:
        await again.close()


@pytest.fixture
def settings(make_settings):
    return make_settings(sqlite_synchronous="FULL")


async def test_the_hub_answers_503_and_reports_the_failure(client, state, monkeypatch):
    if state.settings.postgres:
        pytest.skip("fsync is PostgreSQL's own business there")
    exits = []
    state.on_exit(lambda: exits.append(True))
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    assert (await client.post(channel["callback_url"], json={"n": 1})).status_code == 200

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    answer = await client.post(channel["callback_url"], json={"n": 2})
    monkeypatch.undo()
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "store_unavailable"
    assert int(answer.headers["retry-after"]) >= 1
    assert exits == [True] and state.failed is not None
    health = await client.get("/healthz")
    assert health.status_code == 503 and health.json()["store"] == "failed"
    again = await client.post(channel["callback_url"], json={"n": 3})
    assert again.status_code == 503


async def test_the_database_is_for_the_hub_alone(tmp_path):
    import stat

    store = SQLiteStore(tmp_path / "data" / "hub.db", lambda events: None)
    await store.open()
    try:
        await store.add_events([NewEvent(EventType.WEBHOOK_FAILING, b"{}", channel_id="ch")])
    finally:
        await store.close()
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    for name in ("hub.db", "hub.db-wal", "hub.db-shm"):
        path = tmp_path / "data" / name
        if path.exists():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
