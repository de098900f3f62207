"""One error shape for the whole API: {"error": {"code", "message", "details"}}.

A 5xx body never carries an exception's own text (a database or Redis error names hosts,
ports and database names): only the messages our exceptions were given; the rest is logged.

Errors that escape DRF's handler (a bug in a view, anything raised in a middleware) reach the
root URLconf's handler500, `server_error`: under /api/ it answers in the same shape (500
`internal_error`, or 503 `database_unavailable` when the database cannot be reached), elsewhere
the portal's static error pages. Both bodies name the request id (infra/middleware.py) that
the log line with the traceback carries.
"""

import logging
import sys
from typing import Any

import psycopg
from django.db import utils as db_utils
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template import loader
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from api.renderers import FastJSONRenderer

logger = logging.getLogger(__name__)
SERVER_ERROR_MESSAGE = "The service cannot answer right now; try again."
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; quote the request id if you report it."
DATABASE_UNAVAILABLE_MESSAGE = "The database is unavailable; try again in a few seconds."
# A database failover or restart takes seconds; a client that waits this long (Retry-After)
# before its retry does not add to the load of one that is coming back.
DATABASE_RETRY_AFTER_SECONDS = 5
# Connection refused or dropped, server restarting, statement cancelled, serialization failure:
# psycopg's and Django's (which wraps psycopg's) classes for "this may work if tried again".
_DATABASE_UNAVAILABLE = (
    db_utils.OperationalError,
    db_utils.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


class ApiError(exceptions.APIException):
    """An error with a stable machine-readable code, a human message and optional details."""

    def __init__(
        self, *, status_code: int, code: str, message: str, details: Any = None, headers: dict | None = None
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}  # e.g. Retry-After on a 429
        super().__init__(detail=message, code=code)


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


_DEFAULT_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid_request",
    status.HTTP_401_UNAUTHORIZED: "unauthenticated",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "throttled",
}


def _flatten_message(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = [f"{field}: {_flatten_message(value)}" for field, value in detail.items()]
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_flatten_message(item) for item in detail)
    return str(detail)


def request_id_of(request: HttpRequest | Any) -> str | None:
    """The id infra.middleware.RequestIdMiddleware gave the request (DRF's Request passes it through)."""
    return getattr(request, "request_id", None)


def is_database_unavailable(exc: BaseException | None) -> bool:
    return isinstance(exc, _DATABASE_UNAVAILABLE)


def _database_unavailable(request: HttpRequest | Any, exc: BaseException) -> tuple[dict, dict]:
    """The 503 body and headers; the cause (which names the host) goes to the log only."""
    logger.warning("Database unavailable: %s: %s", type(exc).__name__, exc)
    body = error_body("database_unavailable", DATABASE_UNAVAILABLE_MESSAGE, {"request_id": request_id_of(request)})
    return body, {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}


def _logged(response: HttpResponse) -> HttpResponse:
    # The warning above is this response's log line; Django would add an ERROR line (with the
    # traceback) for every request of an outage. `_has_been_logged` is how Django marks it.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _render_as_json(request: Any) -> None:
    """An error is JSON whatever the view renders on success (the schema's YAML, say)."""
    renderer = getattr(request, "accepted_renderer", None)
    if request is not None and getattr(renderer, "media_type", None) != "application/json":
        request.accepted_renderer = FastJSONRenderer()
        request.accepted_media_type = FastJSONRenderer.media_type


def exception_handler(exc: Exception, context: dict) -> Response | None:
    _render_as_json(context.get("request"))
    if is_database_unavailable(exc):
        body, headers = _database_unavailable(context.get("request"), exc)
        set_rollback()
        return _logged(Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers))
    if isinstance(exc, ApiError):
        response = Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=exc.headers)
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            response["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django log it and answer 500
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    code = _DEFAULT_CODES.get(response.status_code, "error")
    details = None
    if isinstance(detail, dict) and "code" in detail and "message" in detail:
        code, message = str(detail["code"]), str(detail["message"])
    elif isinstance(exc, exceptions.ValidationError):
        code, message, details = "invalid_request", _flatten_message(detail), detail
    elif response.status_code >= status.HTTP_500_INTERNAL_SERVER_ERROR:
        logger.warning("API %s: %s: %s", response.status_code, type(exc).__name__, _flatten_message(detail))
        message = SERVER_ERROR_MESSAGE
    else:
        message = _flatten_message(detail)
    response.data = error_body(code, message, details)
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The root URLconf's handler404. A path no route matches is still answered in the API's
    error shape under /api/ (a client that sends /api/v1/events/-1 reads JSON, not the
    portal's HTML page); elsewhere it is the portal's 404 page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", f"No such resource: {request.path}."), status=404)
    return defaults.page_not_found(request, exception)  # type: ignore[arg-type]


def server_error(request: HttpRequest) -> HttpResponse:
    """The root URLconf's handler500: what an exception no one handled answers (DEBUG off).

    Django calls it inside its `except` block, so the exception is `sys.exc_info()`'s; it logs
    the traceback itself ("Internal Server Error: <path>", with the request id). Nothing here
    touches the database or the session: this page must render while the database is down.
    """
    exc = sys.exc_info()[1]
    request_id = request_id_of(request)
    api = request.path_info.startswith("/api/")
    if is_database_unavailable(exc):
        assert exc is not None
        body, headers = _database_unavailable(request, exc)
        if api:
            return _logged(JsonResponse(body, status=503, headers=headers))
        page = loader.get_template("503.html").render({"request_id": request_id})
        return _logged(HttpResponse(page, status=503, headers=headers))
    if api:
        return JsonResponse(
            error_body("internal_error", INTERNAL_ERROR_MESSAGE, {"request_id": request_id}), status=500
        )
    return HttpResponse(loader.get_template("500.html").render({"request_id": request_id}), status=500)
