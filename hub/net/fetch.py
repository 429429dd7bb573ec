"""Fetching a URL someone else chose (an input image, a provider's output) without letting it
reach inside: every address the name resolves to must be public, the request goes to the
address that was checked (not to a second lookup that could answer differently), redirects
are followed by hand and checked again at each hop, and the body is bounded in size and time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from hub.net import bounded
from hub.net.addresses import is_public
from hub.net.urls import UrlRefused, checked

MAX_REDIRECTS = 5

# (host, port) -> the addresses it resolves to; swappable so tests need no DNS.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class FetchError(Exception):
    """The URL cannot or may not be fetched; the message says why, for a 422."""


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_url(url: str, *, allow_private: bool = False, resolver: Resolver = resolve) -> str:
    """The address to connect to for ``url``; FetchError unless it passes ``urls.checked``
    (the check it had when it was accepted) and every address its host resolves to is
    public (loopback too, if ``allow_private``)."""
    try:
        target = checked(url, allow_private=allow_private)
    except UrlRefused as exc:
        raise FetchError(str(exc)) from None
    host, port = target.host, target.port
    try:
        addresses = await resolver(host, port)
    except (OSError, UnicodeError):
        raise FetchError(f"cannot resolve host {host!r}") from None
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}")
    for raw in addresses:
        address = ipaddress.ip_address(raw)
        if not is_public(address) and not (allow_private and address.is_loopback):
            raise FetchError(f"host {host!r} resolves to a private or reserved address")
    return addresses[0]


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """``url`` aimed at ``address``, with the name kept for the Host header and TLS."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    headers = {"host": parts.netloc.rpartition("@")[2]}
    # httpcore checks the certificate against this name, not the address.
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), headers, extensions


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    within: float,
    allow_private: bool = False,
    resolver: Resolver = resolve,
) -> tuple[bytes, str]:
    """The body and content type at ``url``; FetchError for anything else."""
    try:
        async with asyncio.timeout(within):
            for _ in range(MAX_REDIRECTS + 1):
                address = await check_url(url, allow_private=allow_private, resolver=resolver)
                target, headers, extensions = _pinned(url, address)
                request = client.build_request(
                    "GET",
                    target,
                    headers={**bounded.ASK_IDENTITY, **headers},
                    extensions=extensions,
                )
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await _read(response, max_bytes)
                finally:
                    await response.aclose()
            raise FetchError("redirects too many times")
    except TimeoutError:
        raise FetchError(f"took longer than {within:g} s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"could not be fetched ({type(exc).__name__})") from None


async def _read(response: httpx.Response, max_bytes: int) -> tuple[bytes, str]:
    if response.status_code != 200:
        raise FetchError(f"answered HTTP {response.status_code}")
    try:
        data = await bounded.read(response, max_bytes)
    except bounded.TooLarge:
        raise FetchError(f"is larger than {max_bytes} bytes") from None
    except bounded.UnreadableEncoding as exc:
        raise FetchError(f"sent {exc}") from None
    return data, response.headers.get("content-type", "")


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    within: float,
    allow_private: bool = False,
    resolver: Resolver = resolve,
) -> int:
    """POST ``body`` to ``url`` under the same rules as ``fetch``; the status code, or
    FetchError. Redirects are not followed: a webhook receiver answers where it was told."""
    try:
        async with asyncio.timeout(within):
            address = await check_url(url, allow_private=allow_private, resolver=resolver)
            target, host, extensions = _pinned(url, address)
            request = client.build_request(
                "POST", target, content=body, headers={**headers, **host}, extensions=extensions
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            await response.aclose()  # the answer's body says nothing we use
            return response.status_code
    except TimeoutError:
        raise FetchError(f"took longer than {within:g} s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"could not be reached ({type(exc).__name__})") from None
