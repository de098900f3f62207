"""The usage explorer: raw events by key, model and dates; keyset pages; streamed CSV (read from
the replica when one is configured: infra/db_routing.py)."""

import zoneinfo
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.translation import gettext as _

from accounts import selectors as account_selectors
from api import csv_writer
from infra.db_routing import on_replica, replica_iter
from metering import selectors as usage_selectors
from portal.web.access import PortalContext, portal_view
from portal.web.forms import UsageFilterForm
from portal.web.ranges import PRESETS, range_from_query
from portal.web.views.common import cursor_decode, cursor_encode, page

PAGE_SIZE = 50
# The explorer's columns (metering.selectors.EVENT_COLUMNS) without the row id; the key by name.
CSV_COLUMNS = [column for column in usage_selectors.EVENT_COLUMNS if column != "id"]
CSV_HEADER = ["api_key" if column == "api_key_id" else column for column in CSV_COLUMNS]


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
@on_replica
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
        yield writer.writerow([_csv_cell(column, row[column], key_names, tz) for column in CSV_COLUMNS])


def _csv_cell(column: str, value: object, key_names: dict, tz: zoneinfo.ZoneInfo) -> object:
    """One cell: times in the tenant's zone, keys by name, money as plain decimals, None empty."""
    if value is None:
        return ""
    if column == "occurred_at":
        return value.astimezone(tz).isoformat()  # type: ignore[attr-defined]
    if column == "api_key_id":
        return key_names.get(value, value)
    if column == "cost":
        return format(value, "f")
    return value


@portal_view("usage.view")
@on_replica
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
        replica_iter(_csv_lines(event_filter, key_names, tenant.timezone)), content_type="text/csv; charset=utf-8"
    )
    filename = f"usage-{tenant.slug}-{day_range.start.isoformat()}-{day_range.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
