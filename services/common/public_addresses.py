"""Whether an address is on the public internet: the rule that keeps fetches made on a user's
or a model's behalf (the gateway's ``read_url`` tool, ingest's web sources) away from the cloud
metadata service, the cluster's internal services and loopback.

Both sides resolve the host before a request and check the address actually connected to after
it (a name that resolves differently the second time gains nothing); the rule itself and the
way to read the peer live here once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: str) -> bool:
    """True for an address on the public internet (not loopback, private, link-local, shared,
    reserved, multicast or unspecified; IPv4-mapped IPv6 judged as its IPv4 address)."""
    ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


def first_non_public(address_infos: Iterable[tuple[Any, ...]]) -> str | None:
    """The first non-public address among ``getaddrinfo`` results, or None when all are public."""
    for info in address_infos:
        address = str(info[4][0])
        if not is_public(address):
            return address
    return None


def peer_address(response: httpx.Response) -> str | None:
    """The address ``response`` actually came from, when the transport tells."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    return str(peer[0]) if peer else None
