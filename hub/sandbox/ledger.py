"""What each emulator would have charged: one entry per job it accepted, newest last.

``GET <mount>/_sandbox/ledger`` answers ``{"jobs": [{"id", "billed", "at", "cost_usd"}]}``.
``billed`` says whether the real provider bills that job: AceData, Eachlabs and AtlasCloud
bill every task they accept; Segmind bills every 200 it completes, also when the caller
has gone, and nothing else. ``cost_usd`` is the figure the emulator reported for the job
where it reports one (Eachlabs and Segmind, once the job has succeeded), else null. Tests
and demos read it to prove that a task was paid for once, and at what. Like the fault
queue it takes no key and holds no tenant's data: ids, a flag, a figure and a time.
``DELETE`` empties it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.sandbox.wire import iso, unix_now

MAX_ENTRIES = 10_000


@dataclass
class Entry:
    id: str
    billed: bool
    at: float
    cost_usd: float | None = None


class Ledger:
    """The jobs of one emulator, bounded (the oldest are forgotten first)."""

    def __init__(self, capacity: int = MAX_ENTRIES) -> None:
        self._entries: deque[Entry] = deque(maxlen=capacity)
        self._by_id: dict[str, Entry] = {}

    def record(self, job_id: str, *, billed: bool, cost_usd: float | None = None) -> None:
        """Add the job, or mark it billed (and its cost) if it is there already (a
        Segmind v2 job is entered when queued and billed when it completes)."""
        entry = self._by_id.get(job_id)
        if entry is not None:
            entry.billed = entry.billed or billed
            entry.cost_usd = cost_usd if cost_usd is not None else entry.cost_usd
            return
        if len(self._entries) == self._entries.maxlen:
            self._by_id.pop(self._entries[0].id, None)
        entry = Entry(job_id, billed, unix_now(), cost_usd)
        self._entries.append(entry)
        self._by_id[job_id] = entry

    def jobs(self) -> list[dict[str, object]]:
        return [
            {"id": e.id, "billed": e.billed, "at": iso(e.at), "cost_usd": e.cost_usd}
            for e in self._entries
        ]

    def billed(self) -> int:
        return sum(1 for entry in self._entries if entry.billed)

    def clear(self) -> None:
        self._entries.clear()
        self._by_id.clear()


def ledger_routes(ledger: Ledger) -> list[Route]:
    async def control(request: Request) -> Response:
        if request.method == "DELETE":
            ledger.clear()
        return JSONResponse({"jobs": ledger.jobs()})

    return [Route("/_sandbox/ledger", control, methods=["GET", "DELETE"])]
