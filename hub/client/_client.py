"""The client's calls; ``hub.client`` is where to import them from."""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

from hub.enums import TERMINAL_EVENTS

TERMINAL = TERMINAL_EVENTS
T = TypeVar("T")
# A submit is sent again after a network error, a 5xx or a 409 (its key still held by the
# attempt before), with the same Idempotency-Key: the hub makes one task whatever came back.
RETRIES = 2
RETRY_STATUSES = frozenset({409, 500, 502, 503, 504})
FIRST_DELAY = 0.5
MAX_DELAY = 8.0


class HubError(Exception):
    """The hub answered with an error: ``status`` and its ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Event:
    id: int | None
    type: str
    data: Any


class AsyncClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        read_timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = RETRIES,
    ) -> None:
        """``read_timeout``: how long a read may wait (None: forever). A stream that stays
        silent longer (the hub sends a heartbeat every 15 s) is reconnected."""
        self._retries = retries
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {api_key}", "user-agent": "hub-client"},
            timeout=httpx.Timeout(timeout, read=read_timeout),
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- calls -----------------------------------------------------------------------------

    async def create_channel(
        self, label: str | None = None, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        body = {k: v for k, v in (("label", label), ("ttl_seconds", ttl_seconds)) if v is not None}
        return await self._json("POST", "/v1/channels", json=body)

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/channels/{channel_id}")

    async def list_channels(self) -> list[dict[str, Any]]:
        """The key's newest channels, newest first."""
        channels: list[dict[str, Any]] = (await self._json("GET", "/v1/channels"))["channels"]
        return channels

    async def delete_channel(self, channel_id: str) -> None:
        """Erase a channel with its deliveries and events; its URLs stop working."""
        response = await self._http.delete(f"/v1/channels/{channel_id}")
        _raise_for(response)

    async def list_tasks(self) -> list[dict[str, Any]]:
        """The key's newest tasks, newest first."""
        tasks: list[dict[str, Any]] = (await self._json("GET", "/v1/tasks"))["tasks"]
        return tasks

    async def deliveries(
        self,
        channel_id: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """A page of a channel's deliveries, newest first: ``{"deliveries", "next_before"}``
        (pass ``next_before`` as ``before`` for the next page)."""
        query = (("limit", limit), ("before", before), ("task_id", task_id))
        params = {name: value for name, value in query if value is not None}
        return await self._json("GET", f"/v1/channels/{channel_id}/deliveries", params=params)

    async def delivery(self, delivery_id: str) -> dict[str, Any]:
        """A stored delivery: its headers (``[name, value]`` pairs), query, content type."""
        return await self._json("GET", f"/v1/deliveries/{delivery_id}")

    async def delivery_body(self, delivery_id: str) -> tuple[bytes, str | None]:
        """A stored delivery's exact body bytes and their content type."""
        response = await self._http.get(f"/v1/deliveries/{delivery_id}/body")
        _raise_for(response)
        return response.content, response.headers.get("content-type")

    async def submit(
        self,
        provider: str | Sequence[str],
        prompt: str,
        images: list[str | Path | bytes],
        *,
        channel_id: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Start a task. An image is a URL, a blob id, a local file path or raw bytes
        (files and bytes are sent as data: URLs). ``provider``: one, or several to try in
        order (the task moves on only when one certainly did not bill it). Sent with an
        Idempotency-Key (a new one unless given) and, after a network error, a 5xx or a
        409, sent again with the same key and bytes, up to ``retries`` times: one task,
        however the attempts ended."""
        inputs = {"prompt": prompt, "images": [_image(image) for image in images], **options}
        route = provider if isinstance(provider, str) else list(provider)
        body: dict[str, Any] = {"provider": route, "input": inputs}
        if channel_id is not None:
            body["channel_id"] = channel_id
        headers = {
            "content-type": "application/json",
            "idempotency-key": idempotency_key or f"hub-client-{uuid.uuid4()}",
        }
        return await self._retried("POST", "/v1/tasks", orjson.dumps(body), headers)

    async def get(self, task_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/tasks/{task_id}")

    async def wait(
        self,
        task_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 (the sync Client has the same call)
    ) -> dict[str, Any]:
        """The task once it has ended (succeeded, failed or timed out)."""
        async with asyncio.timeout(timeout):
            async for event in self.events(task_id=task_id):
                if event.type in TERMINAL:
                    break
            return await self.get(task_id)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task; the task, canceled. HubError 409 ``task_ended`` if it had ended."""
        return await self._json("POST", f"/v1/tasks/{task_id}/cancel")

    async def usage(self, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        """The key's spend from ``start`` to ``end`` (UTC dates, YYYY-MM-DD; by default
        this month), by provider and by day, and this month against its budget."""
        query = {k: v for k, v in (("from", start), ("to", end)) if v is not None}
        return await self._json("GET", "/v1/usage", params=query)

    async def download(self, url: str) -> bytes:
        response = await self._http.get(url)
        _raise_for(response)
        return response.content

    async def events(
        self,
        *,
        channel_id: str | None = None,
        task_id: str | None = None,
        last_event_id: int | None = None,
        types: list[str] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Every event of a channel (forever) or of a task (until it ends), from after
        ``last_event_id`` (a channel without one starts live; a task from its start)."""
        if (channel_id is None) == (task_id is None):
            raise ValueError("give channel_id or task_id")
        path = f"/v1/channels/{channel_id}/events" if channel_id else f"/v1/tasks/{task_id}/events"
        params = {"types": ",".join(types)} if types else {}
        last = last_event_id
        delay = 1.0
        while True:
            headers = {"last-event-id": str(last)} if last is not None else {}
            try:
                async with self._http.stream("GET", path, params=params, headers=headers) as r:
                    if r.status_code != 200:
                        await r.aread()
                        _raise_for(r)
                    async for event, retry_ms in _frames(r):
                        if retry_ms is not None:
                            delay = retry_ms / 1000
                        if event is None:
                            continue
                        if event.id is not None:
                            if last is not None and event.id <= last:
                                continue  # already yielded before a reconnect
                            last = event.id
                        yield event
                        if task_id is not None and event.type in TERMINAL:
                            return
            except httpx.TransportError:
                pass
            await asyncio.sleep(delay)  # the stream ended or broke: resume where it stopped

    async def _retried(
        self, method: str, path: str, content: bytes, headers: dict[str, str]
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            retry_after = None
            try:
                response = await self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError:
                if attempt >= self._retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self._retries:
                    _raise_for(response)
                    result: dict[str, Any] = response.json()
                    return result
                retry_after = _seconds(response.headers.get("retry-after"))
            delay = min(FIRST_DELAY * 2**attempt, MAX_DELAY)
            await asyncio.sleep(min(retry_after, MAX_DELAY) if retry_after else delay)
            attempt += 1

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._http.request(method, path, **kwargs)
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result


class Client:
    """The same calls, blocking: an ``AsyncClient`` run on a private event loop thread."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = self._run(_make(base_url, api_key, timeout))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def create_channel(
        self, label: str | None = None, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        return self._run(self._client.create_channel(label, ttl_seconds))

    def get_channel(self, channel_id: str) -> dict[str, Any]:
        return self._run(self._client.get_channel(channel_id))

    def list_channels(self) -> list[dict[str, Any]]:
        return self._run(self._client.list_channels())

    def delete_channel(self, channel_id: str) -> None:
        self._run(self._client.delete_channel(channel_id))

    def list_tasks(self) -> list[dict[str, Any]]:
        return self._run(self._client.list_tasks())

    def deliveries(self, channel_id: str, **query: Any) -> dict[str, Any]:
        return self._run(self._client.deliveries(channel_id, **query))

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        return self._run(self._client.delivery(delivery_id))

    def delivery_body(self, delivery_id: str) -> tuple[bytes, str | None]:
        return self._run(self._client.delivery_body(delivery_id))

    def submit(
        self,
        provider: str | Sequence[str],
        prompt: str,
        images: list[str | Path | bytes],
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        return self._run(
            self._client.submit(
                provider, prompt, images, idempotency_key=idempotency_key, **options
            )
        )

    def get(self, task_id: str) -> dict[str, Any]:
        return self._run(self._client.get(task_id))

    def wait(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._client.wait(task_id, timeout))

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._run(self._client.cancel(task_id))

    def usage(self, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        return self._run(self._client.usage(start, end))

    def download(self, url: str) -> bytes:
        return self._run(self._client.download(url))

    def events(self, **query: Any) -> Iterator[Event]:
        iterator = self._client.events(**query).__aiter__()
        try:
            while True:
                try:
                    yield self._run(_next(iterator))
                except StopAsyncIteration:
                    return
        finally:
            self._run(iterator.aclose())  # type: ignore[attr-defined]

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


async def _make(base_url: str, api_key: str, seconds: float) -> AsyncClient:
    return AsyncClient(base_url, api_key, timeout=seconds)  # made on the loop it runs on


async def _next(iterator: AsyncIterator[Event]) -> Event:
    return await anext(iterator)


def _image(image: str | Path | bytes) -> str:
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:", "blob_")):
        return image
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    media = mimetypes.guess_type(image)[0] if not isinstance(image, bytes) else None
    # Without an image/* type the hub tells the format from the bytes themselves.
    prefix = f"data:{media}" if media and media.startswith("image/") else "data:"
    return f"{prefix};base64," + base64.b64encode(data).decode()


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        # Not the hub's answer (a proxy's page, say): its first words, on one line.
        text = " ".join(response.text[:200].split())
        code, message = "http_error", text or response.reason_phrase
    raise HubError(response.status_code, code, message)


async def _frames(response: httpx.Response) -> AsyncIterator[tuple[Event | None, int | None]]:
    """Server-sent events as an EventSource reads them: (event, None) for each event with
    data, (None, ms) for a retry hint; comments (heartbeats) are skipped."""
    event_id: str | None = None
    event_type = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                number = int(event_id) if event_id and event_id.isdigit() else None
                yield Event(number, event_type, orjson.loads("\n".join(data))), None
            event_id, event_type, data = None, "message", []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id":
            event_id = value
        elif name == "retry" and value.isdigit():
            yield None, int(value)
