"""Every replica hears every event: a NOTIFY carries only the newest event id (a payload
is limited to 8,000 bytes), and each replica reads the events themselves from the store,
in id order, from the last id it published.

Because event ids are handed out in commit order (see ``postgres.py``), "every event
after the last one published" is always a complete answer: reading it never skips an
event that commits later with a lower id. So a lost notification, or a listener
connection that dropped for a while, costs only latency: the next read catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from hub.background.loops import Health
from hub.store.base import Event

log = logging.getLogger("hub.store")

CHANNEL = "hub_events"

Read = Callable[[int, int], Awaitable[Sequence[Event]]]


class Feed:
    def __init__(
        self,
        dsn: str,
        read: Read,
        publish: Callable[[Sequence[Event]], None],
        *,
        page: int = 500,
        check_every: float = 5.0,
        health: Health | None = None,
    ) -> None:
        self.component = (health or Health()).component(
            "events-feed", stuck_after=check_every * 4 + 10
        )
        self._dsn = dsn
        self._read = read
        self._publish = publish
        self._page = page
        self._check_every = check_every
        self._published = 0
        self._kick = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        # How many times the listener connection was opened again after a loss.
        self.reconnects = 0

    @property
    def published(self) -> int:
        """The highest event id handed to ``publish``: every lower one went before it."""
        return self._published

    @property
    def listener_pid(self) -> int | None:
        """The listener's server process id (tests end it to show a reconnect)."""
        return self._listener.get_server_pid() if self._listener is not None else None

    async def start(self, published: int) -> None:
        self._published = published
        await self._listen()  # a bad DSN fails the start, not a background task
        self._task = self.component.task = asyncio.create_task(
            self._run(), name="hub-postgres-feed"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._unlisten()

    def committed(self, events: Sequence[Event]) -> None:
        """Events this replica just committed, in id order. They are published at once when
        they follow the last published id (the usual case, and one read fewer); otherwise
        the feed reads what lies between from the store first."""
        fresh = [event for event in events if event.id > self._published]
        if not fresh:
            return
        if fresh[0].id == self._published + 1:
            self._deliver(fresh)
        else:
            self._kick.set()

    def _deliver(self, events: Sequence[Event]) -> None:
        self._published = events[-1].id
        try:
            self._publish(events)
        except Exception:
            log.exception("publishing events failed")

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._unlisten()
                    await self._listen()
                    self.reconnects += 1
                    log.info("event listener connected again; catching up")
                self._kick.clear()
                await self._catch_up()
                self.component.beat()
                failures = 0
                if not await self._wait_for_kick():
                    await self._check_listener()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.component.failed(exc)
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                log.warning("event feed: %s; retrying in %.1fs", _describe(exc), delay)
                await self._unlisten()
                await asyncio.sleep(delay)

    async def _wait_for_kick(self) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._check_every):
                await self._kick.wait()
                return True
        return False

    async def _catch_up(self) -> None:
        while True:
            events = await self._read(self._published, self._page)
            # A local commit may have published some of them while this read was away.
            fresh = [event for event in events if event.id > self._published]
            if fresh:
                self._deliver(fresh)
            if len(events) < self._page:
                return

    async def _check_listener(self) -> None:
        """A quiet spell: make sure the listener is alive (a half-open connection never
        reports its own death), so notifications are not silently missed for long."""
        assert self._listener is not None
        async with asyncio.timeout(self._check_every):
            await self._listener.execute("SELECT 1")

    async def _listen(self) -> None:
        connection: asyncpg.Connection = await asyncpg.connect(self._dsn)
        try:
            await connection.add_listener(CHANNEL, self._notified)
        except BaseException:
            await connection.close()
            raise
        connection.add_termination_listener(self._lost)
        self._listener = connection

    async def _unlisten(self) -> None:
        connection, self._listener = self._listener, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        try:
            newest = int(str(payload))
        except ValueError:
            newest = self._published + 1
        if newest > self._published:
            self._kick.set()

    def _lost(self, connection: object) -> None:
        self._kick.set()  # the run loop notices the closed connection and reconnects


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
