"""Fetching a URL someone else chose (an input image, a provider's output) without letting it
reach inside: every address it resolves to must be public, redirects are followed by hand and
checked again at each hop, and the body is bounded in size and time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

MAX_REDIRECTS = 5


class FetchError(Exception):
    """The URL cannot or may not be fetched; the message says why, for a 422."""


async def check_url(url: str, *, allow_private: bool = False) -> None:
    """Refuse anything but http(s) to public addresses (loopback allowed if ``allow_private``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("must be an http(s) URL")
    if parts.username or parts.password:
        raise FetchError("must not carry credentials")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchError(f"cannot resolve host {host!r}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not _public(address) and not (allow_private and address.is_loopback):
            raise FetchError(f"host {host!r} resolves to a private or reserved address")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    within: float,
    allow_private: bool = False,
) -> tuple[bytes, str]:
    """The body and content type at ``url``; FetchError for anything else."""
    try:
        async with asyncio.timeout(within):
            for _ in range(MAX_REDIRECTS + 1):
                await check_url(url, allow_private=allow_private)
                async with client.stream("GET", url, follow_redirects=False) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise FetchError(f"is larger than {max_bytes} bytes")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchError(f"is larger than {max_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks), response.headers.get("content-type", "")
            raise FetchError("redirects too many times")
    except TimeoutError:
        raise FetchError(f"took longer than {within:g} s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"could not be fetched ({type(exc).__name__})") from None
