"""Whether a URL someone gave the hub is one it may use later: checked in full when it is
accepted (422 naming the field), and again by the same function before every use.

What can be told from the URL alone is checked here: http(s), a host, no credentials, a
port from 1 to 65535, no spaces or control characters, a host name that encodes, and a
host written as an address (``127.0.0.1``, ``[::1]``, ``[64:ff9b::a00:1]``) judged by the
address rules used when sending (``addresses.is_public``; loopback too where the hub
allows it). A host *name* is judged when it is resolved, at each use, since a name may
point elsewhere by then (``fetch.check_url``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from hub.net.addresses import IPAddress, is_public

# Long enough for a signed storage URL with a session token in its query.
MAX_URL = 8192
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]")


class UrlRefused(ValueError):
    """The URL cannot be used; the message says why, in words for a 422."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # as written, without brackets
    port: int
    address: IPAddress | None  # when the host is written as an address


def checked(url: str, *, allow_private: bool = False) -> Target:
    """Where ``url`` points, if the hub may use it; UrlRefused otherwise."""
    if len(url) > MAX_URL:
        raise UrlRefused(f"must be at most {MAX_URL} characters")
    if _SPACE_OR_CONTROL.search(url):
        raise UrlRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port  # urlsplit checks the port only when asked
    except ValueError as exc:
        # A broken [IPv6] host, a port that is not a number or out of range.
        if "port" in str(exc).lower():
            raise UrlRefused("has an invalid port (1 to 65535)") from None
        raise UrlRefused("has an invalid host") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UrlRefused("must be an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not carry credentials")
    if port == 0:
        raise UrlRefused("has an invalid port (1 to 65535)")
    address = _address(host)
    if address is None:
        try:
            host.encode("idna")
        except UnicodeError:
            raise UrlRefused("has an invalid host name") from None
    elif not is_public(address) and not (allow_private and address.is_loopback):
        raise UrlRefused(f"points at a private or reserved address ({address})")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, host, port or default, address)


def _address(host: str) -> IPAddress | None:
    """The address a host is written as, or None for a name. The old numeric forms that
    resolvers take as IPv4 (``2130706433``, ``0x7f.1``, ``127.1``) are refused: they are
    an address in disguise, and nothing the hub is given needs them."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return None
    raise UrlRefused("must write an IPv4 address as four decimal numbers")
