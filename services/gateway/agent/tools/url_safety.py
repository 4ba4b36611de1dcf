"""Which URLs ``read_url`` may fetch: http(s) only, and no private-network targets by default.

A model told by a web page (or a user) to "read http://169.254.169.254/..." must not reach the
cloud metadata service, the cluster's internal services or the gateway's own port. The host is
resolved and every address it resolves to must be a public one (not loopback, private,
link-local, shared, reserved, multicast or unspecified); after connecting, the address
actually connected to is checked again, so a name that resolves differently the second time
(DNS rebinding) gains nothing. ``ZHIKU_GATEWAY_AGENT_READ_URL_ALLOW_PRIVATE`` lifts the
address rule (for intranet pages), never the scheme rule.
"""

from __future__ import annotations

import asyncio
import socket

import httpx

from services.common.public_addresses import first_non_public, is_public, peer_address
from services.gateway.agent.tools.base import ToolError

ALLOWED_SCHEMES = ("http", "https")


def checked_url(url: str) -> httpx.URL:
    """``url`` parsed, if it is an absolute http(s) URL with a host."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as error:
        raise ToolError(f"{url!r} is not a valid URL: {error}") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise ToolError(f"only http and https URLs can be read, not {parsed.scheme or 'a relative URL'!r}")
    if not parsed.host:
        raise ToolError(f"{url!r} has no host")
    return parsed


async def check_host(url: httpx.URL, *, allow_private: bool) -> None:
    """Refuse ``url`` when its host resolves to a non-public address (unless allowed)."""
    if allow_private:
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ToolError(f"cannot resolve {url.host!r}: {error.strerror}") from None
    address = first_non_public(infos)
    if address is not None:
        raise ToolError(refusal(url.host, address))


def check_peer(response: httpx.Response, *, allow_private: bool) -> None:
    """Refuse a response from a non-public address (the connection's actual peer)."""
    if allow_private:
        return
    peer = peer_address(response)
    if peer is None:
        raise ToolError(f"cannot tell which address {response.url.host!r} was fetched from; refused")
    if not is_public(peer):
        raise ToolError(refusal(response.url.host, peer))


def refusal(host: str, address: str) -> str:
    return (
        f"refusing to read {host!r}: it resolves to {address}, a private, loopback or reserved "
        "address (private-network targets are not allowed)"
    )
