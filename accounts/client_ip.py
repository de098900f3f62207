"""The client address of a request: the one rule, for every layer that needs it.

Login throttling (django-axes, `AXES_CLIENT_IP_CALLABLE`), the /metrics and /readyz allow-list
and per-key allowed networks all ask `client_ip(request)`, so that they agree on who is calling.

Without a declared proxy (`TRUSTED_PROXY_COUNT=0`, the default) the address is the socket's
peer, REMOTE_ADDR: a client can write any X-Forwarded-For it likes, so the header is ignored.
With N proxies declared, each proxy appended the address it received the request from, so the
client is the N-th entry from the right of X-Forwarded-For. A request with fewer entries than
that did not come through the declared chain and is judged by REMOTE_ADDR.
"""

import ipaddress
import logging

from django.conf import settings
from django.http import HttpRequest

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(value: str) -> IPAddress | None:
    """An address from a header entry: "1.2.3.4", "1.2.3.4:5678", "::1" or "[::1]:5678"."""
    value = value.strip()
    if value.startswith("["):  # [v6]:port
        value = value[1 : value.find("]")] if "]" in value else value
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 (a dual-stack socket) is 10.0.0.1
    return address


def client_address(request: HttpRequest) -> IPAddress | None:
    """The client's address as an ip_address object (None: not an address, a test's "unknown")."""
    peer = _parse(request.META.get("REMOTE_ADDR", ""))
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return peer
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < proxies:
        return peer
    forwarded = _parse(hops[-proxies])
    if forwarded is None:
        logger.warning("X-Forwarded-For entry is not an address; using the peer address", extra={"peer": str(peer)})
        return peer
    return forwarded


def client_ip(request: HttpRequest) -> str:
    """The client's address as a string (what axes stores and what logs show); "" if unknown."""
    address = client_address(request)
    return str(address) if address is not None else ""
