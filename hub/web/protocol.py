"""The hub's HTTP/1.1 protocol: uvicorn's httptools protocol with the bounds it lacks.

A 64 MiB request header was answered 200, eight at once took the hub to 603 MiB, and idle
or half-sent connections stayed open for good. Here, per connection:

- the request line and headers together are at most ``max_header_bytes`` and
  ``max_headers`` in number (431 beyond, counted as the bytes arrive, so the parser
  never holds more than the bound and one read);
- the headers must have arrived within ``header_timeout`` of the request's first byte,
  or of the connection's opening (408, or a plain close when nothing was sent);
- beyond ``max_connections`` open at once, a new connection is answered 503 with
  ``Retry-After`` and closed before anything is parsed.

It is also a stream's ``Carrier`` (``hub.streams.sse``): every request's scope offers the
connection under that extension, and an SSE stream, once authorised, its head sent and its
replay written through ASGI, takes it over. uvicorn's cycle for that request is then done
(its ASGI call returns); the stream writes its frames to the transport itself, this
protocol tells it when the transport pauses, resumes and is lost, and when the stream ends
it gets the connection back: the body's last chunk, then keep-alive as after any response.
Whatever the client sends meanwhile is dropped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from hub.streams import events
from hub.streams.sse import CARRIER, EventStream


@dataclass(frozen=True)
class Bounds:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    max_connections: int = 10_000
    retry_after: int = 5


# After a refusal, what is still read (and dropped) before the connection is closed.
LINGER_SECONDS = 2.0
LINGER_BYTES = 8 * 1024 * 1024
# A stream that ended while its client was not reading: how long the client has to take
# the rest before the connection is aborted.
STREAM_LINGER_SECONDS = 10.0


class _Refused(Exception):
    """A bound was crossed: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_REASONS = {
    408: (b"Request Timeout", "request_timeout"),
    431: (b"Request Header Fields Too Large", "headers_too_large"),
    503: (b"Service Unavailable", "too_many_connections"),
}


def protocol(bounds: Bounds) -> type[HttpToolsProtocol]:
    """The protocol class for a server with these bounds (uvicorn makes one per
    connection from the class it is given)."""

    class HubHttpProtocol(_BoundedProtocol):
        BOUNDS = bounds

    return HubHttpProtocol


class _BoundedProtocol(HttpToolsProtocol):
    BOUNDS = Bounds()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_headers = True  # waiting for (the rest of) a request's headers
        self._header_bytes = 0
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._started = False  # any byte of the current request seen
        self._lingering = 0  # refused: bytes discarded since, or 0 before any refusal
        self._stream: EventStream | None = None  # the stream that has this connection
        self._stream_chunked = True
        self._stream_keep_alive = False
        self._lost = False
        self._message_done = False  # the current request's body has been read to its end

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.BOUNDS.max_connections:
            self._refuse(_Refused(503, "too many open connections"))
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm_header_timer()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.lost()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stream is not None:
            self._stream.paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stream is not None:
            self._stream.resumed()

    def data_received(self, data: bytes) -> None:
        if self._stream is not None:
            return  # an SSE client has nothing more to say; a pipelined request is dropped
        if self._lingering:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._in_headers:
            if not self._started:
                self._started = True
                self._arm_header_timer()
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__)
                return
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            # As uvicorn does; the hub serves no WebSockets, so this only warns.
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_headers and self._header_bytes > self.BOUNDS.max_header_bytes:
            self._refuse(_Refused(431, "the request's headers are too large"))

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._message_done = False

    def on_message_complete(self) -> None:
        self._message_done = True
        super().on_message_complete()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.BOUNDS.max_header_bytes:
            raise _Refused(431, "the request line is too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.BOUNDS.max_headers:
            raise _Refused(431, "too many request headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm_header_timer()
        self._header_bytes = self._header_count = 0
        self._started = False
        # ASGI types extensions as dicts of options; this one is the connection itself.
        cast(dict[str, Any], self.scope)["extensions"] = {CARRIER: self}
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Keep-alive: uvicorn's own timer closes a connection left idle; once the next
        # request's first byte comes, its headers have header_timeout to arrive.
        self._in_headers = True

    # -- carrying a stream (hub.streams.sse.Carrier) ---------------------------------------

    def carry(self, scope: Any, stream: EventStream) -> tuple[asyncio.Transport, bool] | None:
        cycle = self.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or self.pipeline
            or self.transport.is_closing()
        ):
            return None
        # uvicorn's cycle is done: its ASGI call may return without a word, and a shutdown
        # may close this connection (the hub ends its streams before that).
        cycle.response_complete = True
        self._stream = stream
        self._stream_chunked = bool(cycle.chunked_encoding)
        # A request whose body is still coming cannot be followed by another: the bytes
        # dropped while the stream had the connection were part of it.
        self._stream_keep_alive = cycle.keep_alive and self._message_done
        if self.flow.write_paused:
            stream.paused()
        # What the request held (its scope, headers, the cycle and its event) is not needed
        # for the stream's life; thousands of idle streams each held a few KB of it.
        self.cycle = None  # type: ignore[assignment]
        self.scope = cast(Any, None)
        self.headers = []
        self.url = b""
        return self.transport, self._stream_chunked

    def release(self, *, abort: bool) -> None:
        self._stream = None
        transport = self.transport
        if self._lost or transport.is_closing():
            return
        if abort:
            transport.abort()
            return
        if self._stream_chunked:
            transport.write(events.LAST_CHUNK)
        if self.flow.write_paused:
            # Its client is not reading: no keep-alive, and a while to take the rest.
            transport.close()
            self.loop.call_later(STREAM_LINGER_SECONDS, self._abort_if_open)
        elif self._stream_keep_alive:
            self.on_response_complete()
        else:
            transport.close()

    def gone(self) -> bool:
        cycle = self.cycle
        return (
            self._lost or self.transport.is_closing() or (cycle is not None and cycle.disconnected)
        )

    def cut(self) -> None:
        if self.cycle is not None:
            self.cycle.disconnected = True  # so uvicorn does not take it for an app's error
        if not self._lost:
            self.transport.abort()

    def _abort_if_open(self) -> None:
        if not self._lost:
            self.transport.abort()

    # -- refusing ----------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.BOUNDS.header_timeout, self._too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self._in_headers or self.transport.is_closing():
            return
        if self._started:
            self._refuse(_Refused(408, "the request's headers took too long"))
        else:
            self.transport.close()  # opened and never used

    def _refuse(self, refused: _Refused) -> None:
        self._disarm_header_timer()
        phrase, code = _REASONS[refused.status]
        body = orjson.dumps({"error": {"code": code, "message": refused.reason}})
        head = [
            b"HTTP/1.1 %d %s\r\n" % (refused.status, phrase),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if refused.status == 503:
            head.append(b"retry-after: %d\r\n" % self.BOUNDS.retry_after)
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self._in_headers = False
        # A close with unread input makes the kernel reset the connection, and a reset
        # can destroy the answer before the client reads it. So: send it and our end of
        # the stream, then read and drop what the client is still sending, for a while.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._lingering = 1
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
