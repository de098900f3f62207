"""One request id per request, and one structured log line per request.

`RequestIdMiddleware` comes first in MIDDLEWARE: it takes the caller's `X-Request-ID` when it is
a sane value (1-128 visible ASCII characters), else makes one (uuid4 hex), keeps it on
`request.request_id`, binds it to every log line written until the response is closed (a
traceback included) and sends it back as `X-Request-ID` on every response, error pages too. The API's
500 and 503 bodies carry it as `details.request_id` (api/errors.py), the portal's error
pages show it: what a caller reports is what an operator searches the logs for.

`RequestLogMiddleware` comes right after it and writes one line per request to the
`portal.requests` logger (INFO) unless LOG_REQUESTS is off: method, the route template
(`/api/v1/events/<int:event_id>`, never the raw path or its query string), status, duration,
and who called when that is known without a query (the API key or service token DRF
authenticated, the portal page's tenant). Never a header, a body or a query string.

This module imports no app (pyproject.toml, "Settings and infrastructure import no app"): the
credential is read by attribute, the way DRF leaves it on the request.
"""

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from django.conf import settings
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject, empty

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

logger = logging.getLogger("portal.requests")


def request_id_from(request: HttpRequest) -> str:
    """The caller's X-Request-ID if it is sane, else a new one."""
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")
    if _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        # Bound until the response is closed (request_finished): Django logs a 4xx or 5xx
        # ("Not Found: ...") after the middleware chain has returned.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _forget_request_id(**kwargs: Any) -> None:
    structlog.contextvars.unbind_contextvars("request_id")


request_finished.connect(_forget_request_id, dispatch_uid="infra.middleware.forget_request_id")


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        if settings.LOG_REQUESTS:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            route = _route(request)
            fields = {
                "method": request.method,
                "path": route,
                "status": response.status_code,
                "duration_ms": duration_ms,
                **_caller(request),
            }
            logger.info("%s %s %s", request.method, route or "(no route)", response.status_code, extra=fields)
        return response


def _route(request: HttpRequest) -> str | None:
    """The URL pattern that answered (`/api/v1/invoices/<int:pk>`), None when none matched."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return None
    return "/" + match.route


def _caller(request: HttpRequest) -> dict[str, Any]:
    """Who called, from what the request already holds; never a query of its own.

    DRF replaces `request.user` with the credential's Principal (accounts/authentication.py)
    once it authenticated one; the session user stays a lazy object until a view reads it, and
    is only reported once read. A portal page's tenant is on `request.portal` once resolved.
    """
    fields: dict[str, Any] = {}
    user = request.__dict__.get("user")
    if isinstance(user, SimpleLazyObject):
        user = None if user._wrapped is empty else user._wrapped
    api_key = getattr(user, "api_key", None)
    service_token = getattr(user, "service_token", None)
    tenant = None
    if api_key is not None:
        fields["api_key_id"] = api_key.pk
        tenant = api_key._state.fields_cache.get("tenant")
        fields["tenant_id"] = api_key.tenant_id
    elif service_token is not None:
        fields["service_token_id"] = service_token.pk
    elif user is not None and getattr(user, "is_authenticated", False):
        fields["user_id"] = user.pk
        portal = getattr(request, "portal", None)
        tenant = getattr(portal, "tenant", None)
        if tenant is not None:
            fields["tenant_id"] = tenant.pk
    if tenant is not None:
        fields["tenant"] = tenant.slug
    return fields
