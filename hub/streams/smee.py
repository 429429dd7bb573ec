"""smee.io's stream format, for ``?format=smee``: each callback as an unnamed event whose
data is the delivery's headers with ``body``, ``query`` and ``timestamp`` beside them. That
is what smee-client reads: it POSTs ``body`` as JSON to its target, with those headers
and the query, so a developer's machine gets the callbacks as if sent to it."""

from __future__ import annotations

from hub.enums import EventType
from hub.formats import dumps, loads
from hub.store.base import Event
from hub.streams.events import encode

FORMAT = "smee"


def frame(event: Event) -> bytes | None:
    """The frame for ``event``, or None: only callbacks exist in this format."""
    if event.type != EventType.CALLBACK_RECEIVED:
        return None
    data = loads(event.data)
    message = dict(data.get("headers") or {})
    message.update(
        body=data.get("body"),
        query=data.get("query") or {},
        timestamp=int(event.created_at * 1000),
    )
    # The id is kept: smee-client's EventSource resumes with Last-Event-ID like any other.
    return encode(dumps(message), id=event.id)
