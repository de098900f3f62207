"""Small helpers the portal's views share."""

import datetime as dt

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def page(request: HttpRequest, template: str, context: dict | None = None, status: int = 200) -> HttpResponse:
    """Render a portal page; `portal` (who is looking, which tenant) is always in the context."""
    data = {"portal": getattr(request, "portal", None)}
    data.update(context or {})
    return render(request, template, data, status=status)


def int_param(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def cursor_encode(moment: dt.datetime, row_id: int) -> str:
    """A keyset cursor (occurred_at, id) as text: microseconds since the epoch, dot, id."""
    return f"{(moment - EPOCH) // dt.timedelta(microseconds=1)}.{row_id}"


def cursor_decode(value: str | None) -> tuple[dt.datetime, int] | None:
    if not value:
        return None
    micros, _, row_id = value.partition(".")
    if not (micros.lstrip("-").isdigit() and row_id.isdigit()) or len(micros) > 20 or len(row_id) > 18:
        return None
    try:
        return EPOCH + dt.timedelta(microseconds=int(micros)), int(row_id)
    except OverflowError:
        return None
