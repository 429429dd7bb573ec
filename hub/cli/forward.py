"""``hub forward CHANNEL --to URL``: each delivery a channel receives, POSTed again to a
local server as it came (its body bytes, content type, headers and query string), like
``stripe listen --forward-to`` for any sender.

Built to run for weeks: it follows the channel's stream with the API key (no expiring watch
URL to renew) and ``Last-Event-ID``; the last event forwarded is kept in a state file,
written once the local server has answered, so a restart of either side resumes after it,
with nothing skipped and nothing sent twice; a local server that does not answer is retried
until it does, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hub.cli.connect import CommandError, add_connection, client_for, sync

if TYPE_CHECKING:
    import httpx

    from hub.client import AsyncClient, Event

# Meaningful for one hop only (RFC 9110 7.6.1), or set anew by this connection.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
     "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
     "content-length"}
)  # fmt: skip
# Added to each forwarded request: a receiver may drop the one repeat a kill -9 between
# the local answer and the state file's write can cause.
DELIVERY_HEADER = "x-hub-delivery-id"
RETRY_FIRST, RETRY_MAX = 0.25, 5.0
LOCAL_TIMEOUT = 30.0
# The hub's answers that say "later", not "never".
PASSING = frozenset({408, 425, 429, 500, 502, 503, 504})
# A stream that sends nothing for this long (the hub sends a heartbeat every 15 s) is taken
# for dead, as a connection is after a laptop's sleep, and resumed with Last-Event-ID.
IDLE_STREAM_SECONDS = 60.0


class _Stopped(Exception):
    """A stop was asked for while nothing was in flight."""


def add_commands(commands: Any) -> None:
    forward = commands.add_parser(
        "forward", help="POST each delivery a channel receives to a local URL, as it came"
    )
    add_connection(forward)
    forward.add_argument("channel_id")
    forward.add_argument(
        "--to", required=True, help="the local URL, e.g. http://localhost:3000/hook"
    )
    forward.add_argument(
        "--state", type=Path, help="where the last forwarded event is kept"
        " (default: .hub-forward-CHANNEL.json here)"
    )  # fmt: skip
    forward.add_argument(
        "--from", dest="after", type=int,
        help="forward deliveries after this event id (default: where it stopped, or new ones)",
    )  # fmt: skip
    forward.set_defaults(run=sync(forward_channel))


@dataclass
class State:
    """The last event forwarded, kept in a small JSON file written atomically."""

    path: Path
    channel_id: str
    last_event_id: int | None = None

    @classmethod
    def load(cls, path: Path, channel_id: str) -> State:
        import orjson

        try:
            saved = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(path, channel_id)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CommandError(f"cannot read the state file {path}: {exc}") from None
        if saved.get("channel_id") != channel_id:
            raise CommandError(
                f"the state file {path} is for channel {saved.get('channel_id')}:"
                " name another with --state"
            )
        last = saved.get("last_event_id")
        return cls(path, channel_id, last if isinstance(last, int) else None)

    def save(self, last_event_id: int) -> None:
        import orjson

        self.last_event_id = last_event_id
        data = orjson.dumps({"channel_id": self.channel_id, "last_event_id": last_event_id})
        # Written aside, synced, renamed over: a crash leaves the old state or the new one.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def forward_headers(pairs: list[list[str]] | list[tuple[str, str]]) -> dict[str, str]:
    """A delivery's stored ``[name, value]`` pairs fit to send again: hop-by-hop ones and
    ``host`` left out, repeated ones joined with ", " as HTTP allows."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in HOP_BY_HOP:
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def with_query(url: str, query: str) -> str:
    """The local URL with the delivery's own query string after its own (senders put
    things there: ``?event=order.paid``)."""
    if not query:
        return url
    base, _, fragment = url.partition("#")
    joined = f"{base}&{query}" if "?" in base else f"{base}?{query}"
    return f"{joined}#{fragment}" if fragment else joined


async def forward_channel(args: argparse.Namespace, out: TextIO) -> int:
    import httpx

    if not args.to.startswith(("http://", "https://")):
        raise CommandError(f"--to {args.to}: give an http:// or https:// URL")
    state = State.load(args.state or Path(f".hub-forward-{args.channel_id}.json"), args.channel_id)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # A stop asked for lets the delivery in flight finish and be saved first.
        loop.add_signal_handler(sig, stopping.set)
    hub = client_for(args, read_timeout=IDLE_STREAM_SECONDS)
    async with hub, httpx.AsyncClient(timeout=LOCAL_TIMEOUT) as local:
        forwarder = Forwarder(hub, local, args.to, state, out, stopping)
        await forwarder.start(args.after)
        out.write(
            f"forwarding {args.channel_id} to {args.to} after event {state.last_event_id}"
            f" (state in {state.path}; Ctrl-C to stop)\n"
        )
        out.flush()
        await forwarder.run()
    return 0


class Forwarder:
    def __init__(
        self,
        hub: AsyncClient,
        local: httpx.AsyncClient,
        url: str,
        state: State,
        out: TextIO,
        stopping: asyncio.Event,
    ) -> None:
        self._hub = hub
        self._local = local
        self._url = url
        self._state = state
        self._out = out
        self._stopping = stopping
        self._posting = False  # a POST is out and not yet answered

    async def start(self, after: int | None) -> None:
        """Where to begin: ``--from``, else the state file, else after the channel's newest
        delivery (so only new ones are sent, and a restart before the first still knows
        where it began)."""
        if after is not None:
            self._state.save(after)
        elif self._state.last_event_id is None:
            channel_id = self._state.channel_id
            page = await self._hub_call(lambda: self._hub.deliveries(channel_id, limit=20))
            ids = [d["event_id"] for d in page["deliveries"] if d.get("event_id") is not None]
            self._state.save(max(ids, default=0))

    async def run(self) -> None:
        following = asyncio.create_task(self._follow())
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self._posting and not following.done():
                # Cut now, the local server might have acted on it and never be asked
                # again: let its answer come, and be saved, first.
                await asyncio.wait({following}, timeout=LOCAL_TIMEOUT)
            if following.done():
                following.result()  # the hub refused (a revoked key, a deleted channel)
        finally:
            stop.cancel()
            if not following.done():
                following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following

    async def _follow(self) -> None:
        from hub.client import HubError

        delay = RETRY_FIRST
        while True:
            try:
                events = self._hub.events(
                    channel_id=self._state.channel_id,
                    last_event_id=self._state.last_event_id,
                    types=["callback.received"],
                )
                async with contextlib.aclosing(events):
                    async for event in events:
                        await self._forward(event)
                        delay = RETRY_FIRST
                        if self._stopping.is_set():
                            return
            except _Stopped:
                return
            except HubError as exc:
                if exc.status not in PASSING:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _forward(self, event: Event) -> None:
        from hub.client import HubError

        data = event.data if isinstance(event.data, dict) else {}
        delivery_id = data.get("delivery_id")
        assert event.id is not None  # a channel's stored events all carry ids
        if not isinstance(delivery_id, str):
            self._line(event.id, "-", "skipped: the event names no stored delivery")
        else:
            try:
                delivery = await self._hub_call(lambda: self._hub.delivery(delivery_id))
                body, _ = await self._hub_call(lambda: self._hub.delivery_body(delivery_id))
            except HubError as exc:
                if exc.status != 404:
                    raise
                self._line(event.id, delivery_id, "skipped: deleted from the hub")
            else:
                headers = {**forward_headers(delivery["headers"]), DELIVERY_HEADER: delivery_id}
                url = with_query(self._url, str(delivery.get("query") or ""))
                status, seconds = await self._post(url, body, headers)
                self._line(event.id, delivery_id, f"{status} in {seconds * 1000:.0f} ms")
        # Only once the local server has answered: a kill before this resends it.
        self._state.save(event.id)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
        """POST until the local server answers (any status is an answer). One it took but
        never answered (it died, or took over LOCAL_TIMEOUT) is sent again too: a local
        server restarting mid-request is the common case, and the repeat carries the same
        delivery id header."""
        import httpx

        delay = RETRY_FIRST
        told = False
        while True:
            started = time.perf_counter()
            self._posting = True
            try:
                response = await self._local.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                if self._stopping.is_set():
                    raise _Stopped from None
                if not told:
                    self._out.write(f"{self._url} does not answer ({type(exc).__name__});"
                                    " retrying until it does\n")  # fmt: skip
                    self._out.flush()
                    told = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            finally:
                self._posting = False
            return response.status_code, time.perf_counter() - started

    async def _hub_call(self, call: Any) -> Any:
        """A call to the hub, retried while the hub is away or says "later"."""
        import httpx

        from hub.client import HubError

        delay = RETRY_FIRST
        told = False
        while True:
            try:
                return await call()
            except httpx.TransportError as exc:
                problem = type(exc).__name__
            except HubError as exc:
                if exc.status not in PASSING:
                    raise
                problem = str(exc)
            if not told:
                self._out.write(f"the hub does not answer ({problem}); retrying until it does\n")
                self._out.flush()
                told = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _line(self, event_id: int, delivery_id: str, outcome: str) -> None:
        at = time.strftime("%H:%M:%S")
        self._out.write(f"{at} #{event_id} {delivery_id} -> {outcome}\n")
        self._out.flush()
