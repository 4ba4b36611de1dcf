"""Which hosts a web source may fetch from: public addresses only, unless configured otherwise.

A user who may edit a knowledge base must not be able to index the cloud metadata service
(169.254.169.254), the cluster's internal services or the ingest service's own neighbours by
creating a web source that points there. Every request's host is resolved and must resolve to
public addresses only, and every response's actual peer is checked again (a name that resolves
differently the second time gains nothing). ``ZHIKU_INGEST_SOURCES_ALLOW_PRIVATE_NETWORKS``
lifts the rule, for intranet sites. (The gateway's ``read_url`` tool applies the same rule,
``services.common.public_addresses``.)
"""

from __future__ import annotations

import socket

import httpx

from services.common.public_addresses import first_non_public, is_public, peer_address


class PrivateAddress(httpx.HTTPError):
    """The URL's host is (or resolved to) a non-public address."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(
            f"{host} resolves to {address}, a private, loopback or reserved address "
            "(set ZHIKU_INGEST_SOURCES_ALLOW_PRIVATE_NETWORKS=true for intranet sites)"
        )


def check_request(request: httpx.Request) -> None:
    """httpx request hook (redirects included): the host must resolve to public addresses."""
    url = request.url
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise httpx.ConnectError(f"cannot resolve {url.host!r}: {error.strerror}", request=request) from None
    address = first_non_public(infos)
    if address is not None:
        raise PrivateAddress(url.host, address)


def check_response(response: httpx.Response) -> None:
    """httpx response hook: the address actually connected to must be public."""
    peer = peer_address(response)
    if peer is None or not is_public(peer):
        raise PrivateAddress(response.url.host, peer or "an unknown address")
