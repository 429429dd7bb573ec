"""Fault injection: faults queued over HTTP, consumed by the next submits of one provider.

``POST <mount>/_sandbox/faults {"kind": "429", "count": 2}`` queues faults; ``GET`` lists
what is pending; ``DELETE`` clears the queue. The queue is first in, first out, and each
submit consumes at most one fault: the one at its head, and only if that fault can apply
to the submit (a callback fault waits for a submit that names a callback URL). Polls and
other reads never consume faults. The control endpoints take no API key: they change
only the sandbox itself and carry no tenant's data.

``hang`` and ``reset_after_accept`` are the ambiguous cases a client cannot tell apart
from a lost request: the job exists and is billed (see the ledger), the answer never
arrives. ``stall`` is a job that never ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.sandbox.validation import ApiError
from hub.sandbox.wire import MAX_JSON_BODY, read_json_object

MAX_PENDING = 1_000
MAX_COUNT = 100


class FaultKind(StrEnum):
    TOO_MANY_REQUESTS = "429"  # the submit is answered with the provider's 429
    SERVER_ERROR = "500"  # the submit is answered with the provider's 5xx
    # The job is accepted (and billed), its answer held past the client's timeout (until it
    # leaves, or ``hang_seconds``); the job then completes: the client paid and never knew.
    HANG = "hang"
    # The job is created (and billed), then the connection is cut before its answer.
    RESET_AFTER_ACCEPT = "reset_after_accept"
    # A synchronous answer never comes and nothing is billed; an async job is accepted and
    # never finishes (what "hang" meant before the ledger).
    STALL = "stall"
    DUPLICATE_CALLBACK = "duplicate_callback"  # the callback is delivered twice, byte-identical
    CALLBACK_BEFORE_RESPONSE = "callback_before_response"  # acknowledged before the submit answers
    LOST_CALLBACK = "lost_callback"  # the job finishes and can be polled; no callback is sent
    FAIL = "fail"  # the job ends in the provider's failure shape


SUBMIT_FAULTS = frozenset({FaultKind.TOO_MANY_REQUESTS, FaultKind.SERVER_ERROR})
CALLBACK_FAULTS = frozenset(
    {FaultKind.DUPLICATE_CALLBACK, FaultKind.CALLBACK_BEFORE_RESPONSE, FaultKind.LOST_CALLBACK}
)
ALL_FAULTS = frozenset(FaultKind)


def job_faults(*, has_callback: bool) -> frozenset[FaultKind]:
    """The faults a valid submit consumes, given whether it asked for a callback."""
    kinds = {FaultKind.HANG, FaultKind.STALL, FaultKind.RESET_AFTER_ACCEPT, FaultKind.FAIL}
    return frozenset(kinds | CALLBACK_FAULTS) if has_callback else frozenset(kinds)


class FaultQueue:
    """The pending faults of one provider."""

    def __init__(self, supported: Collection[FaultKind] = ALL_FAULTS) -> None:
        self.supported = frozenset(supported)
        self._pending: deque[FaultKind] = deque()

    def add(self, kind: FaultKind, count: int = 1) -> None:
        if kind not in self.supported:
            raise ValueError(f"fault {kind.value!r} does not apply to this provider")
        if len(self._pending) + count > MAX_PENDING:
            raise ValueError(f"at most {MAX_PENDING} faults can be pending")
        self._pending.extend([kind] * count)

    def clear(self) -> None:
        self._pending.clear()

    def take(self, accepted: Collection[FaultKind]) -> FaultKind | None:
        """Pop the head fault if ``accepted`` contains it; otherwise leave the queue alone."""
        if self._pending and self._pending[0] in accepted:
            return self._pending.popleft()
        return None

    def pending(self) -> list[dict[str, Any]]:
        """Runs of the same kind, in order: [{"kind": "429", "count": 2}, ...]."""
        runs: list[dict[str, Any]] = []
        for kind in self._pending:
            if runs and runs[-1]["kind"] == kind.value:
                runs[-1]["count"] += 1
            else:
                runs.append({"kind": kind.value, "count": 1})
        return runs


def fault_routes(queue: FaultQueue) -> list[Route]:
    def listing(status: int = 200) -> Response:
        return JSONResponse(
            {"pending": queue.pending(), "supported": sorted(k.value for k in queue.supported)},
            status_code=status,
        )

    def refuse(message: str) -> Response:
        return JSONResponse({"error": message}, status_code=400)

    async def control(request: Request) -> Response:
        if request.method == "GET":
            return listing()
        if request.method == "DELETE":
            queue.clear()
            return listing()
        try:
            body = await read_json_object(request, MAX_JSON_BODY)
        except ApiError:
            return refuse('expected a JSON object like {"kind": "429", "count": 1}')
        try:
            kind = FaultKind(str(body.get("kind")))
        except ValueError:
            return refuse(f"kind must be one of: {', '.join(k.value for k in FaultKind)}")
        count = body.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            return refuse(f"count must be an integer between 1 and {MAX_COUNT}")
        try:
            queue.add(kind, count)
        except ValueError as error:
            return refuse(str(error))
        return listing(201)

    return [Route("/_sandbox/faults", control, methods=["GET", "POST", "DELETE"])]
