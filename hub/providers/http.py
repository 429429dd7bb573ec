"""The one place a provider HTTP call is made, and every way it can fail is mapped.

``ProviderHTTP`` sends a request to one provider's base URL with that provider's auth
header and timeout, reads the answer under a size bound, and turns failures into
``ProviderError``: network errors, timeouts, 429 and 5xx are retryable (with
``Retry-After`` when the provider sends one); any other non-2xx is final, with the
provider's own message pulled out of whichever error shape it uses. The API key never
appears in a message, even when a provider echoes it back.

The small helpers at the end read what the providers send back (JSON objects, base64
images, output URLs, headers) and are shared by the adapter modules.
"""

from __future__ import annotations

import base64
import binascii
import html
import math
import mimetypes
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from hub.blobs.images import sniff
from hub.net import bounded
from hub.providers.base import ErrorCode, Output, ProviderConfig, ProviderError, Resend

MAX_JSON_BYTES = 8 * 1024 * 1024
# Raw image answers, and JSON answers that carry base64 images (several MB each).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Enough of an error body to find its message; the rest is never read.
MAX_ERROR_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 300
# A provider asking for more than an hour is treated as asking for an hour: the engine's
# own deadline decides beyond that.
MAX_RETRY_AFTER = 3600.0
_CONNECT_TIMEOUT = 10.0
# Multipart file fields: (field name, (filename, bytes, content type)).
Files = list[tuple[str, tuple[str, bytes, str]]]
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer, read in full (within its bound)."""

    status: int
    headers: httpx.Headers
    content: bytes


class ProviderHTTP:
    """Calls one provider: its base URL, its auth headers, its timeout."""

    def __init__(
        self, config: ProviderConfig, client: httpx.AsyncClient, auth: Mapping[str, str]
    ) -> None:
        self.name = config.name
        self._base = config.base_url.rstrip("/")
        self._client = client
        self._auth = dict(auth)
        self._secret = config.api_key
        timeout = config.request_timeout
        self._timeout = httpx.Timeout(timeout, connect=min(_CONNECT_TIMEOUT, timeout))

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        data: Mapping[str, str] | None = None,
        files: Files | None = None,
        limit: int = MAX_JSON_BYTES,
        accept: Collection[int] = (),
    ) -> Reply:
        """Send ``method {base}{path}``; a non-2xx status not in ``accept`` raises."""
        try:
            request = self._client.build_request(
                method,
                self._base + path,
                headers={**bounded.ASK_IDENTITY, **self._auth},
                json=json,
                data=data,
                files=files,
                timeout=self._timeout,
            )
            # Redirects are not followed: custom key headers would go wherever they point.
            response = await self._client.send(request, stream=True, follow_redirects=False)
            try:
                ok = 200 <= response.status_code < 300 or response.status_code in accept
                if not ok:
                    body = await _read(response, MAX_ERROR_BYTES, truncate=True) or b""
                    raise self.status_error(response.status_code, response.headers, body)
                content = await _read(response, limit)
                if content is None:
                    raise self.error(f"answered with more than {limit} bytes")
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise self.error("timed out", retryable=True) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise self.error("has a base URL that is not a valid http(s) URL") from None
        except httpx.TransportError as exc:
            reason = f"could not be reached ({type(exc).__name__})"
            raise self.error(reason, retryable=True) from None
        except (httpx.DecodingError, bounded.UnreadableEncoding):
            raise self.error("sent a body that could not be decoded", retryable=True) from None
        return Reply(response.status_code, response.headers, content)

    async def json(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        files: Files | None = None,
        limit: int = MAX_JSON_BYTES,
    ) -> dict[str, Any]:
        """``request`` whose answer must be a JSON object."""
        reply = await self.request(method, path, json=json, files=files, limit=limit)
        return self.json_body(reply)

    def json_body(self, reply: Reply) -> dict[str, Any]:
        value = load_json_object(reply.content)
        if value is None:
            raise self.error(f"answered HTTP {reply.status} with a body that is not a JSON object")
        return value

    def error(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> ProviderError:
        """A ProviderError naming the provider, with the key scrubbed from the message."""
        text = f"{self.name}: {message}"
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        resend = Resend.SAFE if retryable else Resend.NEVER
        if retryable:
            code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.PROVIDER_UNAVAILABLE
        else:
            code = ErrorCode.PROVIDER_REFUSED
        return ProviderError(text, resend=resend, code=code, status=status, retry_after=retry_after)

    def status_error(self, status: int, headers: httpx.Headers, body: bytes) -> ProviderError:
        retryable = status in (408, 429) or status >= 500
        detail = describe_error(body, headers.get("content-type", ""))
        text = f"HTTP {status}" + (f": {detail}" if detail else "")
        if 300 <= status < 400:
            text += " (a redirect; check the base URL)"
        retry_after = parse_retry_after(headers.get("retry-after")) if retryable else None
        return self.error(text, retryable=retryable, status=status, retry_after=retry_after)


async def _read(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes | None:
    """The body up to ``limit`` bytes (decoded): cut there if ``truncate``, else None
    when larger."""
    try:
        return await bounded.read(response, limit, truncate=truncate)
    except bounded.TooLarge:
        return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def describe_error(body: bytes, content_type: str = "") -> str:
    """The provider's own words from an error body, whatever its shape.

    AceData ``{"success": false, "error": {"code", "message"}}``; Eachlabs and Segmind
    ``{"error": "..."}`` (Eachlabs adds ``details``); AtlasCloud ``{"code", "message"}``
    or ``msg``; Segmind's gateway answers some statuses with an HTML page.
    """
    value = load_json_object(body)
    if value is not None:
        return _clip(_json_message(value))
    if b"<html" in body[:512].lower() or "html" in content_type.lower():
        title = _TITLE.search(body)
        page = html.unescape(title.group(1).decode("utf-8", "replace")) if title else ""
        return _clip(f"an HTML page ({' '.join(page.split())})" if page.strip() else "an HTML page")
    text = body.decode("utf-8", "replace").strip()
    return _clip(text.splitlines()[0] if text else "")


def _json_message(value: dict[str, Any]) -> str:
    error = value.get("error")
    code: object = None
    message: object = None
    if isinstance(error, dict):
        message = error.get("message") or error.get("msg")
        code = error.get("code") or error.get("type")
    elif isinstance(error, str) and error:
        message = error
    if not message:
        message = value.get("message") or value.get("msg")
        code = value.get("code")
    # AtlasCloud repeats the HTTP status as a number in "code"; only a word adds anything.
    words = [str(code)] if isinstance(code, str) and code else []
    if isinstance(message, str) and message:
        words.append(message)
    details = value.get("details") or value.get("detail")
    if isinstance(details, str) and details:
        words.append(f"({details})")
    return " ".join(words) if words else orjson.dumps(value).decode()


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


# -- reading what providers send back -----------------------------------------------------


def load_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None if it is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, case-insensitively, from any mapping (Starlette, httpx or a dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, found in headers.items():
        if key.lower() == wanted:
            return found
    return None


def base64_output(text: str) -> Output:
    """An image sent as base64 (raw or a ``data:`` URL); ValueError if it is not one."""
    payload = text.partition(",")[2] if text.startswith("data:") else text
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an output is not valid base64") from None
    content_type = sniff(data)
    if content_type is None:
        raise ValueError("an output is not a PNG, JPEG or WEBP image")
    return Output(data=data, content_type=content_type)


def url_output(url: str) -> Output:
    """An image to download later; the type is a hint from the path's extension."""
    guessed = mimetypes.guess_type(urlsplit(url).path)[0]
    return Output(url=url, content_type=guessed if guessed in _IMAGE_TYPES else None)


def is_http_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
