"""Read paths for usage: API aggregates today, dashboards and invoices later."""

import datetime as dt
import zoneinfo
from decimal import Decimal

from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate

from metering.models import UsageEvent

GROUPINGS = ("day", "model", "api_key")


def usage_aggregate(*, tenant_id: int, tz_name: str, start: dt.datetime, end: dt.datetime, group_by: str) -> list[dict]:
    """Totals per group over [start, end): requests, tokens by kind, cost (unrounded)."""
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}")
    events = UsageEvent.objects.filter(tenant_id=tenant_id, occurred_at__gte=start, occurred_at__lt=end)
    if group_by == "day":
        events = events.annotate(group=TruncDate("occurred_at", tzinfo=zoneinfo.ZoneInfo(tz_name)))
    elif group_by == "model":
        events = events.annotate(group=F("model"))
    else:
        events = events.annotate(group=F("api_key_id"))
    rows = (
        events.values("group")
        .annotate(
            requests=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cached_input_tokens=Sum("cached_input_tokens"),
            cache_write_tokens=Sum("cache_write_tokens"),
            cost=Sum("cost"),
            unpriced_requests=Count("id", filter=Q(cost__isnull=True)),
        )
        .order_by("group")
    )
    return [
        {
            "group": row["group"].isoformat() if isinstance(row["group"], dt.date) else row["group"],
            "requests": row["requests"],
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "cached_input_tokens": row["cached_input_tokens"] or 0,
            "cache_write_tokens": row["cache_write_tokens"] or 0,
            "cost": row["cost"] if row["cost"] is not None else Decimal(0),
            "unpriced_requests": row["unpriced_requests"],
        }
        for row in rows
    ]


def event_for_tenant(*, tenant_id: int, event_id: int) -> UsageEvent | None:
    return UsageEvent.objects.filter(tenant_id=tenant_id, pk=event_id).first()
