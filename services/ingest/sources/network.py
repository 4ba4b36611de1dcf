"""Which hosts a web source may fetch from: public addresses only, unless configured otherwise.

A user who may edit a knowledge base must not be able to index the cloud metadata service
(169.254.169.254), the cluster's internal services or the ingest service's own neighbours by
creating a web source that points there. Every request's host is resolved and must resolve to
public addresses only, and every response's actual peer is checked again (a name that resolves
differently the second time gains nothing). ``ZHIKU_INGEST_SOURCES_ALLOW_PRIVATE_NETWORKS``
lifts the rule, for intranet sites. (The gateway's ``read_url`` tool applies the same rule;
services share no code but ``services.common``, hence this small module of its own.)
"""

from __future__ import annotations

import ipaddress
import socket

import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PrivateAddress(httpx.HTTPError):
    """The URL's host is (or resolved to) a non-public address."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(
            f"{host} resolves to {address}, a private, loopback or reserved address "
            "(set ZHIKU_INGEST_SOURCES_ALLOW_PRIVATE_NETWORKS=true for intranet sites)"
        )


def is_public(address: str) -> bool:
    ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])
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


def check_request(request: httpx.Request) -> None:
    """httpx request hook (redirects included): the host must resolve to public addresses."""
    url = request.url
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise httpx.ConnectError(f"cannot resolve {url.host!r}: {error.strerror}", request=request) from None
    for info in infos:
        if not is_public(str(info[4][0])):
            raise PrivateAddress(url.host, str(info[4][0]))


def check_response(response: httpx.Response) -> None:
    """httpx response hook: the address actually connected to must be public."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer or not is_public(str(peer[0])):
        raise PrivateAddress(response.url.host, str(peer[0]) if peer else "an unknown address")
