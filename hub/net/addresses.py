"""Which addresses the hub may connect to for a URL someone else chose: public ones only.

``ipaddress``'s own ``is_global`` lets through the IPv6 forms that carry or reach an IPv4
address (NAT64, IPv4-compatible, SIIT, 6to4, Teredo) and the deprecated site-local range;
on a NAT64 network the first reaches private IPv4 hosts. An address that embeds an IPv4
one is judged by that address; the translation ranges that reach anything are refused.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused whatever they hold: they translate to, or route towards, addresses the
# hub cannot judge from here.
_REFUSED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "::/96",  # IPv4-compatible (deprecated), :: and ::1 among them
        "::ffff:0:0:0/96",  # SIIT's IPv4-translated addresses
        "64:ff9b:1::/48",  # NAT64 for local use: a network's own translator
        "2001::/32",  # Teredo
        "fec0::/10",  # site-local (deprecated)
        "100::/64",  # discard-only
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: mapped, NAT64 (well-known prefix), 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _6TO4:
        return address.sixtofour
    return None


def is_public(address: IPAddress) -> bool:
    """Whether a connection to ``address`` stays on the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
        if any(address in network for network in _REFUSED):
            return False
    return address.is_global and not address.is_multicast
