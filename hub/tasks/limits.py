"""Per-provider limits the hub keeps itself, so a provider's documented rate and concurrency
limits are respected rather than discovered by failing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable


class Limiter:
    """At most ``concurrency`` calls at once and ``per_minute`` calls in any 60 s (0 = none)."""

    def __init__(
        self,
        per_minute: int = 0,
        concurrency: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is not None:
            await self._semaphore.acquire()
        try:
            await self._wait_for_rate()
            yield
        finally:
            if self._semaphore is not None:
                self._semaphore.release()

    async def _wait_for_rate(self) -> None:
        if self._per_minute <= 0:
            return
        async with self._lock:  # callers take their turn, in order
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - 60:
                    self._starts.popleft()
                if len(self._starts) < self._per_minute:
                    self._starts.append(now)
                    return
                await self._sleep(self._starts[0] + 60 - now)
