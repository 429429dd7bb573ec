"""Background jobs of the emulators: owned, counted, cancelled on stop.

Every task is kept in a set (the event loop only holds weak references) and dropped in
its done-callback, in the manner of uvicorn's protocol tasks. Closing the runner refuses
new work, cancels what runs and waits for it, so a stopped sandbox leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class JobRunner:
    """Owns the asyncio tasks that finish predictions and deliver callbacks."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def active(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        if self._closed:
            coro.close()
            raise RuntimeError("the sandbox is stopped")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("sandbox job %s crashed", task.get_name(), exc_info=error)

    async def wait_idle(self) -> None:
        """Wait until no job runs, including jobs spawned by the jobs being waited for."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
