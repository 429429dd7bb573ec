"""A loop that never dies silently, and the health every loop reports.

``forever(component, step)`` runs ``step`` again and again. An error is logged and the
step tried again after a backoff that grows while it keeps failing; every step that
finishes is a heartbeat. ``Health`` holds the components: a loop whose task ended
(``dead``), that keeps failing (``failing``) or has not beaten for longer than it should
(``stuck``) is named by ``GET /healthz``, which then answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("hub.background")

# A step: one round of work, returning how long to wait before the next (0: at once).
Step = Callable[[], Awaitable[float]]


@dataclass
class Component:
    name: str
    # No heartbeat for this long means the loop is stuck (awaiting something that never
    # comes back): longer than its longest wait between steps.
    stuck_after: float
    started: float = field(default_factory=time.monotonic)
    last_beat: float | None = None
    failures: int = 0  # in a row
    last_error: str | None = None
    task: asyncio.Task[Any] | None = None

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def state(self, now: float) -> str:
        if self.task is not None and self.task.done():
            return "dead"
        if self.failures >= FAILING_AFTER:
            return "failing"
        if now - (self.last_beat or self.started) > self.stuck_after:
            return "stuck"
        return "ok"


FAILING_AFTER = 3


class Health:
    """The hub's background components, by name."""

    def __init__(self) -> None:
        self.components: dict[str, Component] = {}

    def component(self, name: str, *, stuck_after: float) -> Component:
        made = self.components[name] = Component(name, stuck_after)
        return made

    def report(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Whether every component is ok, and each one's state."""
        now = time.monotonic()
        shown: dict[str, dict[str, Any]] = {}
        for name, component in sorted(self.components.items()):
            state = component.state(now)
            entry: dict[str, Any] = {"state": state}
            if component.last_beat is not None:
                entry["seconds_since_beat"] = round(now - component.last_beat, 3)
            if component.failures:
                entry["failures"] = component.failures
            if component.last_error is not None and state != "ok":
                entry["last_error"] = component.last_error
            shown[name] = entry
        return all(entry["state"] == "ok" for entry in shown.values()), shown


async def forever(
    component: Component, step: Step, *, backoff: float = 0.2, cap: float = 30.0
) -> None:
    """Run ``step`` for as long as the task lives; errors are logged and waited out."""
    while True:
        try:
            wait = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            component.failed(exc)
            delay = min(cap, backoff * 2 ** (component.failures - 1))
            log.exception("%s failed (%d in a row); again in %.1fs", component.name,
                          component.failures, delay)  # fmt: skip
            await asyncio.sleep(delay)
            continue
        component.beat()
        if wait > 0:
            await asyncio.sleep(wait)
