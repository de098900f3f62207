"""The outbound URL policy: which addresses a tenant's URL may make the server call.

Alert channels (webhook, DingTalk, any future one) are URLs typed by tenants and fetched by our
workers, so without a policy they reach whatever the workers can reach: loopback services,
the cloud metadata endpoint (169.254.169.254), databases and admin consoles on private
networks. The policy:

- http and https only, no user:password@ in the URL, no spaces or control characters;
- the host, and every address it resolves to, must be a public (globally routable) unicast
  address: loopback, private (RFC 1918), shared (100.64.0.0/10), link-local, unique-local
  (fc00::/7), site-local, multicast, reserved, unspecified and every other non-global address
  are refused, for IPv4 and IPv6, also when wrapped in IPv6 (IPv4-mapped ::ffff:a.b.c.d, NAT64
  64:ff9b::/96, 6to4 2002::/16);
- except what the operator lists in OUTBOUND_ALLOWED_NETWORKS (CIDR networks and/or host
  names), for receivers on premises.

`check_url` runs when a channel is saved. `resolve` runs before every request: it resolves the
host once, checks every answer, and returns the checked addresses; the HTTP helper connects
to exactly those (infra/notifications/http.py), so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot move the request elsewhere.
"""

import functools
import ipaddress
import logging
import re
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from infra.notifications.base import ConfigError

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2000
REFUSED = "refused by policy: the server only sends to public internet addresses"

_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are IPv4
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


class OutboundRefused(ConfigError):
    """The URL's host is, or resolves to, an address the policy refuses."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and what to say once connected."""

    scheme: str  # "http" or "https"
    host: str  # as in the URL (IDNA, lower case): the Host header, TLS SNI and certificate name
    port: int
    request_target: str  # path and query, for the request line
    addresses: tuple[tuple[int, tuple[Any, ...]], ...]  # (family, sockaddr): checked, connect to these only


# (reason, test) in the order they are asked: the first that holds names the refusal.
_REFUSALS: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("unspecified", lambda address: address.is_unspecified),
    ("loopback", lambda address: address.is_loopback),
    ("link-local", lambda address: address.is_link_local),
    (
        "private",
        lambda address: isinstance(address, ipaddress.IPv4Address) and any(address in net for net in _RFC1918),
    ),
    ("shared address space", lambda address: address in _SHARED),
    ("unique-local", lambda address: address in _UNIQUE_LOCAL),
    ("multicast", lambda address: address.is_multicast),
    ("reserved", lambda address: address.is_reserved),
    ("not globally routable", lambda address: address.is_private or not address.is_global),
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), if any."""
    embedded = address.ipv4_mapped or address.sixtofour
    if embedded is None and address in _NAT64:
        embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return embedded


def refusal_reason(address: IPAddress) -> str | None:
    """Why the policy refuses `address` (allow-list aside), or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"embeds {embedded}: {reason}" if reason else None
        if address.is_site_local:
            return "site-local"
    return next((reason for reason, refused in _REFUSALS if refused(address)), None)


@functools.lru_cache(maxsize=8)  # keyed by the setting's value, which tests change
def _allow_list(
    entries: tuple[str, ...],
) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], frozenset]:
    networks, names = [], set()
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return tuple(networks), frozenset(names)


def allowed() -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], frozenset]:
    """OUTBOUND_ALLOWED_NETWORKS: (networks, host names), as settings.py checked them."""
    return _allow_list(tuple(settings.OUTBOUND_ALLOWED_NETWORKS))


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (for the allow-list)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _address_refusal(address: IPAddress) -> str | None:
    networks, _ = allowed()
    if any(_plain(address) in network or address in network for network in networks):
        return None
    return refusal_reason(address)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    request_target: str


def _parse(value: object, field: str) -> _Parsed:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field} is required.")
    if len(value) > MAX_URL_LENGTH:
        raise ConfigError(f"{field} is too long.")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in value):
        raise ConfigError(f"{field} must not contain spaces or control characters.")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{field} is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{field} must be an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ConfigError(f"{field} must not contain a user name or password (user:password@).")
    if port == 0:
        raise ConfigError(f"{field} has no usable port.")
    host = parts.hostname
    if _literal(host) is None:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ConfigError(f"{field} has an invalid host name.") from None
        if not _HOST_NAME.fullmatch(host.rstrip(".")):
            raise ConfigError(f"{field} has an invalid host name.")
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request_target = _NON_ASCII.sub(lambda match: urllib.parse.quote(match.group()), request_target)  # IRI -> URI
    return _Parsed(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), request_target)


def _refuse(host: str, address: IPAddress, reason: str) -> OutboundRefused:
    logger.warning("outbound policy: %s is %s (%s): refused", host, address, reason)  # the detail stays here
    return OutboundRefused(REFUSED)


def _resolve(parsed: _Parsed) -> tuple[tuple[int, tuple[Any, ...]], ...]:
    """Every address of the host, each checked. Raises OutboundRefused, or OSError (no answer)."""
    _, names = allowed()
    by_name = parsed.host.rstrip(".") in names
    literal = _literal(parsed.host)
    if literal is not None and not by_name and (reason := _address_refusal(literal)) is not None:
        raise _refuse(parsed.host, literal, reason)  # refused without asking any resolver
    answers = socket.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = []
    for family, _type, _proto, _canonname, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(sockaddr[0])
        reason = None if by_name else _address_refusal(address)
        if reason is not None:
            raise _refuse(parsed.host, address, reason)
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"no address for {parsed.host}")
    return tuple(addresses)


def check_url(value: object, field: str) -> str:
    """For saving a channel: the URL if the policy lets it through, else ConfigError.

    A host that does not resolve now is accepted (a receiver not in DNS yet, a resolver
    hiccup): the check before every send refuses it if it later resolves somewhere refused.
    """
    parsed = _parse(value, field)
    if parsed.host.rstrip(".") in allowed()[1]:
        return str(value)  # a receiver the operator named: nothing to check, no DNS question
    try:
        _resolve(parsed)
    except OutboundRefused:
        raise OutboundRefused(f"{field}: {REFUSED}.") from None
    except (OSError, UnicodeError):
        pass
    return str(value)


def resolve(url: str) -> Target:
    """For sending: the URL's checked addresses. Raises OutboundRefused, ConfigError or OSError."""
    parsed = _parse(url, "url")
    addresses = _resolve(parsed)
    return Target(parsed.scheme, parsed.host, parsed.port, parsed.request_target, addresses)
