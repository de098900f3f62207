"""A small JSON-over-HTTP POST on the standard library, with errors the transports classify."""

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from portal.notifications.base import ConfigError

USER_AGENT = "tokenbill-notifications/1"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    retry_after: float | None


def check_url(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field} is required.")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{field} must be an http:// or https:// URL.")
    if len(value) > 2000:
        raise ConfigError(f"{field} is too long.")
    return value


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: ignored, the caller's backoff applies


def post_json(url: str, body: bytes, *, headers: dict[str, str], timeout: float) -> HttpResponse:
    """POST and return the response, whatever its status. Network failures raise OSError."""
    check_url(url, "url")  # http(s) only, never file:// or other schemes
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
            return HttpResponse(response.status, response.read(65536), None)
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpResponse(exc.code, exc.read(65536), _retry_after(exc.headers.get("Retry-After")))
