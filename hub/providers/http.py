"""The one place a provider HTTP call is made, and every way it can fail is mapped.

``ProviderHTTP`` sends a request to one provider's base URL with that provider's auth
header and timeout, reads the answer under a size bound, and turns failures into
``ProviderError`` with a ``Resend`` class. Two kinds of call are told apart:

- The **submit** (``submit=True``): the one call that creates a billable job. It always
  goes out on a connection of its own, never a kept-alive one, so that a failure to
  connect proves that no byte of it left. Then: no connection (refused, DNS, connect
  timeout, no pool slot) is SAFE; a 408 or 429 is SAFE (with ``Retry-After``); a 5xx is
  SAFE only where the adapter's ``unbilled`` rule says the provider documents it as
  unbilled, else UNKNOWN; a write that failed part way, a read timeout, a connection cut
  before or in the middle of the answer and a 2xx that cannot be read are UNKNOWN; any
  other 4xx is NEVER.
- Every other call (polls, uploads, key sets, cancels) creates nothing that is billed:
  network errors, timeouts, 408, 429 and 5xx are SAFE to repeat, other 4xx are NEVER.

The provider's own message is pulled out of whichever error shape it uses. The API key
never appears in a message, even when a provider echoes it back.

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
import ssl
from collections.abc import Callable, Collection, Mapping
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
# A submit's 5xx: (status, error body) -> True where the provider documents it as unbilled.
Unbilled = Callable[[int, bytes], bool]
UNKNOWN_SUFFIX = "; the provider may have accepted and charged for the job, so it is not sent again"


# A refusal (4xx): (status, error body) -> its ErrorCode, where it is not PROVIDER_REFUSED.
Refusal = Callable[[int, bytes], "ErrorCode | None"]


def never_unbilled(status: int, body: bytes) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer, read in full (within its bound)."""

    status: int
    headers: httpx.Headers
    content: bytes


class ProviderHTTP:
    """Calls one provider: its base URL, its auth headers, its timeout."""

    def __init__(
        self,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        auth: Mapping[str, str],
        *,
        unbilled: Unbilled = never_unbilled,
        refusal: Refusal | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = config.name
        self._unbilled = unbilled
        self._refusal = refusal
        self._headers = dict(headers or {})
        if config.user_agent:
            self._headers["User-Agent"] = config.user_agent
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
        submit: bool = False,
    ) -> Reply:
        """Send ``method {base}{path}``; a non-2xx status not in ``accept`` raises.
        ``submit``: this call creates the billable job (see the module's docstring)."""
        try:
            if submit and _pools_connections(self._client):
                async with _one_shot_client(self._client) as client:
                    return await self._send(
                        client, method, path, json, data, files, limit, accept, submit
                    )
            return await self._send(
                self._client, method, path, json, data, files, limit, accept, submit
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise self.error("has a base URL that is not a valid http(s) URL") from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The connection never opened (refused, no such host, TLS refused, no slot):
            # on a connection of its own, not one byte of the request went out.
            reason = f"could not be reached ({type(exc).__name__})"
            raise self.error(reason, retryable=True) from None
        except httpx.TimeoutException as exc:
            if submit:
                raise self.unknown(f"did not answer in time ({type(exc).__name__})") from None
            raise self.error("timed out", retryable=True) from None
        except httpx.TransportError as exc:
            if submit:
                raise self.unknown(f"cut the connection ({type(exc).__name__})") from None
            reason = f"could not be reached ({type(exc).__name__})"
            raise self.error(reason, retryable=True) from None
        except (httpx.DecodingError, bounded.UnreadableEncoding):
            if submit:
                raise self.unknown("sent an answer that could not be decoded") from None
            raise self.error("sent a body that could not be decoded", retryable=True) from None

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        json: object,
        data: Mapping[str, str] | None,
        files: Files | None,
        limit: int,
        accept: Collection[int],
        submit: bool,
    ) -> Reply:
        request = client.build_request(
            method,
            self._base + path,
            headers={**self._headers, **bounded.ASK_IDENTITY, **self._auth},
            json=json,
            data=data,
            files=files,
            timeout=self._timeout,
        )
        # Redirects are not followed: custom key headers would go wherever they point.
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            ok = 200 <= response.status_code < 300 or response.status_code in accept
            if not ok:
                body = await _read(response, MAX_ERROR_BYTES, truncate=True) or b""
                raise self.status_error(response.status_code, response.headers, body, submit=submit)
            content = await _read(response, limit)
            if content is None:
                message = f"answered with more than {limit} bytes"
                raise self.unknown(message) if submit else self.error(message)
        finally:
            await response.aclose()
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

    def json_body(self, reply: Reply, *, submit: bool = False) -> dict[str, Any]:
        value = load_json_object(reply.content)
        if value is None:
            message = f"answered HTTP {reply.status} with a body that is not a JSON object"
            raise self.unknown(message) if submit else self.error(message)
        return value

    def unknown(self, message: str, *, status: int | None = None) -> ProviderError:
        """The submit may have been accepted and billed: never sent again."""
        return ProviderError(
            self._scrub(f"{self.name}: {message}{UNKNOWN_SUFFIX}"),
            resend=Resend.UNKNOWN,
            code=ErrorCode.OUTCOME_UNKNOWN,
            status=status,
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def error(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        code: ErrorCode | None = None,
        slot_full: bool = False,
    ) -> ProviderError:
        """A ProviderError naming the provider, with the key scrubbed from the message."""
        text = self._scrub(f"{self.name}: {message}")
        resend = Resend.SAFE if retryable else Resend.NEVER
        if code is None and retryable:
            code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.PROVIDER_UNAVAILABLE
        elif code is None:
            code = ErrorCode.PROVIDER_REFUSED
        return ProviderError(
            text,
            resend=resend,
            code=code,
            status=status,
            retry_after=retry_after,
            slot_full=slot_full,
        )

    def status_error(
        self, status: int, headers: httpx.Headers, body: bytes, *, submit: bool = False
    ) -> ProviderError:
        detail = describe_error(body, headers.get("content-type", ""))
        text = f"HTTP {status}" + (f": {detail}" if detail else "")
        if submit and status >= 500 and not self._unbilled(status, body):
            return self.unknown(text, status=status)
        retryable = status in (408, 429) or status >= 500
        if 300 <= status < 400:
            text += " (a redirect; check the base URL)"
        retry_after = parse_retry_after(headers.get("retry-after")) if retryable else None
        code = None if retryable or self._refusal is None else self._refusal(status, body)
        return self.error(
            text, retryable=retryable, status=status, retry_after=retry_after, code=code
        )


def _pools_connections(client: httpx.AsyncClient) -> bool:
    """Whether the client talks over real, pooled connections. A test's in-memory
    transport (MockTransport, ASGITransport) has no connection to reuse; httpx offers no
    public accessor for the transport, hence the private attribute."""
    return isinstance(getattr(client, "_transport", None), httpx.AsyncHTTPTransport)


_SSL_CONTEXT: ssl.SSLContext | None = None


def _one_shot_client(shared: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client that opens a new connection for its one request and closes it after:
    with no kept-alive connection, "could not connect" means "sent nothing"."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()  # loading the CA set once, not per submit
    return httpx.AsyncClient(
        headers=shared.headers,
        trust_env=shared.trust_env,
        verify=_SSL_CONTEXT,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    )


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


def any_output(text: str) -> Output:
    """An output string: a URL to download, else base64 (raw or ``data:``); ValueError if
    it is neither."""
    return url_output(text) if is_http_url(text) else base64_output(text)


def is_http_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
