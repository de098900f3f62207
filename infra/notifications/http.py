"""JSON over HTTP POST for the transports, behind the outbound URL policy.

Every request goes through `post_json`: the URL is checked by the policy (outbound.py) right
before the request, and the connection goes to the addresses that check approved, never to a
second resolution of the host name; the Host header, TLS SNI and certificate check use the
host name of the URL. Redirects are not followed (a receiver could point us anywhere).

Tenants see what went wrong only in generic words (the delivery's error is shown in the
portal): "refused by policy", or "the receiver did not answer" for every network failure
(refused, timed out, reset, TLS, DNS), so a channel cannot be used to map which internal or
external ports answer. The detail goes to the server log.
"""

import http.client
import logging
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from infra.notifications import outbound
from infra.notifications.base import ConfigError, TransportError

logger = logging.getLogger(__name__)

USER_AGENT = "tokenbill-notifications/1"
MAX_BODY = 65536  # bytes of a response kept

REFUSED = f"could not deliver: {outbound.REFUSED}"
NO_ANSWER = "could not deliver: the receiver did not answer"
REDIRECTED = "could not deliver: redirects are not followed"

check_url = outbound.check_url  # what transports call when a channel is saved


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    retry_after: float | None


def url_path(value: object) -> str:
    """The path of a URL a tenant typed, "" when it is not a URL: for shape checks before check_url."""
    try:
        return urllib.parse.urlsplit(value).path if isinstance(value, str) else ""
    except ValueError:
        return ""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: ignored, the caller's backoff applies


def _connect(addresses: tuple[tuple[int, tuple[Any, ...]], ...], timeout: float | None) -> socket.socket:
    """A TCP connection to the first checked address that answers."""
    error: OSError = OSError("no address")
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error


class PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client speaking to the host of the URL, connected to the checked addresses only."""

    def __init__(self, target: outbound.Target, *, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.addresses = target.addresses

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS: SNI and the certificate are checked against the URL's host name."""

    def __init__(self, target: outbound.Target, *, timeout: float) -> None:
        self.tls = ssl.create_default_context()  # verifies the chain and the host name
        super().__init__(target.host, target.port, timeout=timeout, context=self.tls)
        self.addresses = target.addresses

    def connect(self) -> None:
        sock = _connect(self.addresses, self.timeout)
        try:
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def post_json(url: str, body: bytes, *, headers: dict[str, str], timeout: float) -> HttpResponse:
    """POST to a URL the policy allows; return the response whatever its status (but 3xx).

    Raises TransportError: permanent for a URL the policy refuses or a redirect, transient for
    any network failure, each with a generic message.
    """
    try:
        target = outbound.resolve(url)
    except ConfigError as exc:  # refused by policy, or a URL written around the save checks
        logger.warning("outbound POST to %s refused: %s", _where(url), exc)
        raise TransportError(REFUSED, permanent=True) from exc
    except (OSError, UnicodeError) as exc:
        logger.warning("outbound POST to %s: no address: %r", _where(url), exc)
        raise TransportError(NO_ANSWER, permanent=False) from exc
    connection_class = PinnedHTTPSConnection if target.scheme == "https" else PinnedHTTPConnection
    connection = connection_class(target, timeout=timeout)
    try:
        connection.request(
            "POST",
            target.request_target,
            body=body,
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT, **headers},
        )
        response = connection.getresponse()
        answer = HttpResponse(response.status, response.read(MAX_BODY), _retry_after(response.getheader("Retry-After")))
    except (OSError, http.client.HTTPException) as exc:
        tried = ", ".join(str(sockaddr[0]) for _family, sockaddr in target.addresses)
        logger.warning("outbound POST to %s (%s): %r", _where(url), tried, exc)
        raise TransportError(NO_ANSWER, permanent=False) from exc
    finally:
        connection.close()
    if 300 <= answer.status < 400:
        logger.warning("outbound POST to %s: HTTP %s redirect not followed", _where(url), answer.status)
        raise TransportError(f"{REDIRECTED} (HTTP {answer.status})", permanent=True)
    return answer


def _where(url: str) -> str:
    """scheme://host:port of a URL, for logs (paths and queries may carry tokens)."""
    try:
        target = urllib.parse.urlsplit(url)
        return f"{target.scheme}://{target.hostname}:{target.port or ''}"
    except ValueError:
        return "(unparsable URL)"
