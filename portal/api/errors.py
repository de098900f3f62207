"""One error shape for the whole API: {"error": {"code", "message", "details"}}.

A 5xx body never carries an exception's own text (a database or Redis error names hosts,
ports and database names): only the messages our exceptions were given; the rest is logged.
"""

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)
SERVER_ERROR_MESSAGE = "The service cannot answer right now; try again."


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


def exception_handler(exc: Exception, context: dict) -> Response | None:
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
