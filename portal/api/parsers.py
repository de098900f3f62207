"""A strict, fast JSON parser: orjson, which rejects NaN and Infinity, and a body size limit."""

from typing import Any

import orjson
from django.conf import settings
from rest_framework import parsers, status

from portal.api.errors import ApiError


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        code="body_too_large",
        message=f"The request body is larger than the limit of {limit} bytes.",
        details={"limit_bytes": limit},
    )


def read_limited(stream: Any, *, declared_length: str | None) -> bytes:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        if declared_length and int(declared_length) > limit:
            raise body_too_large(limit)
    except ValueError:
        pass
    body = stream.read(limit + 1) if stream is not None else b""
    if len(body) > limit:
        raise body_too_large(limit)
    return body


def loads(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(status_code=400, code="malformed_json", message="The request body is empty; send JSON.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            status_code=400,
            code="malformed_json",
            message=f"The request body is not valid JSON ({exc}). NaN and Infinity are not JSON.",
        ) from exc


class StrictJSONParser(parsers.BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        return loads(read_limited(stream, declared_length=declared))
