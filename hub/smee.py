"""smee.io's stream format, for ``?format=smee``: each callback as an unnamed event whose
data is the delivery's headers with ``body``, ``query`` and ``timestamp`` beside them. That
is what smee-client reads: it POSTs ``body`` as JSON to its target, with those headers
and the query, so a developer's machine gets the callbacks as if sent to it."""

from __future__ import annotations

from hub import events
from hub.events import CALLBACK_RECEIVED, Event

FORMAT = "smee"


def frame(event: Event) -> bytes | None:
    """The frame for ``event``, or None: only callbacks exist in this format."""
    if event.type != CALLBACK_RECEIVED:
        return None
    data = events.loads(event.data)
    message = dict(data.get("headers") or {})
    message.update(
        body=data.get("body"),
        query=data.get("query") or {},
        timestamp=int(event.created_at * 1000),
    )
    # The id is kept: smee-client's EventSource resumes with Last-Event-ID like any other.
    return events.encode(events.dumps(message), id=event.id)
