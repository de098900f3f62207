"""A strict, fast JSON parser: orjson, which rejects NaN and Infinity, and a body size limit."""

import json
import math
from typing import Any

import orjson
from django.conf import settings
from rest_framework import parsers, status

from api.errors import ApiError


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
        found = _non_finite_number(body)
        if found is not None:
            path, text = found
            raise ApiError(
                status_code=400,
                code="malformed_json",
                message=f"{path} is {text}: NaN and Infinity are not JSON numbers; send a whole number.",
                details={"field": path},
            ) from exc
        raise ApiError(
            status_code=400,
            code="malformed_json",
            message=f"The request body is not valid JSON ({exc}). NaN and Infinity are not JSON.",
        ) from exc


class _NonFinite:
    def __init__(self, text: str) -> None:
        self.text = text


def _float_or_marker(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _marker_path(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, _NonFinite):
        return path or "(body)", value.text
    if isinstance(value, dict):
        children = [(f"{path}.{key}" if path else key, child) for key, child in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[{index}]", child) for index, child in enumerate(value)]
    else:
        return None
    for child_path, child in children:
        found = _marker_path(child, child_path)
        if found is not None:
            return found
    return None


def _non_finite_number(body: bytes) -> tuple[str, str] | None:
    """(field path, token) of the first NaN/Infinity/overflowing number in otherwise valid JSON.

    Only on the error path: orjson rejects these, and clients deserve to hear which field.
    """
    try:
        data = json.loads(body, parse_constant=_NonFinite, parse_float=_float_or_marker)
    except (ValueError, RecursionError):
        return None
    return _marker_path(data, "")


class StrictJSONParser(parsers.BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        return loads(read_limited(stream, declared_length=declared))
