"""The usage explorer: raw events by key, model and dates; keyset pages; streamed CSV."""

import zoneinfo
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.translation import gettext as _

from metering import selectors as usage_selectors
from portal.accounts import selectors as account_selectors
from portal.api import csv_writer
from portal.web.access import PortalContext, portal_view
from portal.web.forms import UsageFilterForm
from portal.web.ranges import PRESETS, range_from_query
from portal.web.views.common import cursor_decode, cursor_encode, page

PAGE_SIZE = 50
CSV_HEADER = [
    "occurred_at",
    "request_id",
    "api_key",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost",
    "currency",
    "latency_ms",
]


def _filter(request: HttpRequest, portal: PortalContext):
    """The form, the date range and the EventFilter the query string asks for."""
    tenant = portal.tenant
    assert tenant is not None
    keys = account_selectors.api_keys_for_tenant(tenant_id=tenant.pk)
    form = UsageFilterForm(request.GET, keys=keys, models=usage_selectors.models_used(tenant_id=tenant.pk))
    day_range, range_error = range_from_query(request.GET, tenant.timezone)
    valid = form.is_valid()
    start, end = day_range.utc_bounds(tenant.timezone)
    event_filter = usage_selectors.EventFilter(
        tenant_id=tenant.pk,
        start=start,
        end=end,
        api_key_id=form.cleaned_data.get("key") if valid else None,
        model=form.cleaned_data.get("model", "") if valid else "",
    )
    return form, valid, day_range, range_error, event_filter, {key.pk: key.name or key.prefix for key in keys}


@portal_view("usage.view")
def usage(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    form, valid, day_range, range_error, event_filter, key_names = _filter(request, portal)
    rows, next_cursor, totals = [], None, None
    if valid:
        rows, after = usage_selectors.events_page(
            event_filter=event_filter, after=cursor_decode(request.GET.get("after")), limit=PAGE_SIZE
        )
        next_cursor = cursor_encode(*after) if after else None
        totals = usage_selectors.usage_totals(
            tenant_id=tenant.pk,
            start_day=day_range.start,
            end_day=day_range.end,
            api_key_id=event_filter.api_key_id,
            model=event_filter.model,
        )
    for row in rows:
        row["key_label"] = key_names.get(row["api_key_id"], row["api_key_id"])
    query = request.GET.copy()
    query.pop("after", None)
    return page(
        request,
        "portal/usage.html",
        {
            "form": form,
            "day_range": day_range,
            "range_error": range_error,
            "presets": PRESETS,
            "rows": rows,
            "totals": totals,
            "next_cursor": next_cursor,
            "is_first_page": not request.GET.get("after"),
            "query": query.urlencode(),
        },
    )


class _Echo:
    """A file-like sink for csv.writer: returns each line instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(event_filter, key_names: dict, tz_name: str) -> Iterator[str]:
    writer = csv_writer.writer(_Echo())  # key names, request ids and models are neutralised
    tz = zoneinfo.ZoneInfo(tz_name)
    yield writer.writerow(CSV_HEADER)
    for row in usage_selectors.events_iter(event_filter=event_filter):
        yield writer.writerow(
            [
                row["occurred_at"].astimezone(tz).isoformat(),
                row["request_id"],
                key_names.get(row["api_key_id"], row["api_key_id"]),
                row["model"],
                row["input_tokens"],
                row["output_tokens"],
                row["cached_input_tokens"],
                row["cache_write_tokens"],
                "" if row["cost"] is None else format(row["cost"], "f"),
                row["currency"],
                "" if row["latency_ms"] is None else row["latency_ms"],
            ]
        )


@portal_view("usage.view")
def usage_csv(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    """Every event the explorer's filter matches (all pages), streamed; times in the tenant's zone."""
    tenant = portal.tenant
    assert tenant is not None
    _form, valid, day_range, range_error, event_filter, key_names = _filter(request, portal)
    if not valid:
        return HttpResponse(_("Invalid filter."), status=400, content_type="text/plain; charset=utf-8")
    if range_error:  # never a file of some other range than the one asked for
        return HttpResponse(range_error, status=400, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(
        _csv_lines(event_filter, key_names, tenant.timezone), content_type="text/csv; charset=utf-8"
    )
    filename = f"usage-{tenant.slug}-{day_range.start.isoformat()}-{day_range.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
