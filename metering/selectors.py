"""Read paths for usage: API aggregates today, dashboards and invoices later."""

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate, TruncMonth

from accounts.models import Tenant
from billing.money import ROUNDING, round_to_currency
from infra.paging import keyset_page
from metering.models import ArchivedUsageTotal, DailyUsage, UsageEvent

GROUPINGS = ("day", "model", "api_key", "service_tier")


def usage_aggregate(
    *, tenant_id: int, tz_name: str, start: dt.datetime, end: dt.datetime, group_by: str
) -> list[dict[str, Any]]:
    """Totals per group over [start, end): requests, tokens by kind, cost (unrounded)."""
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}")
    events = UsageEvent.objects.filter(tenant_id=tenant_id, occurred_at__gte=start, occurred_at__lt=end)
    if group_by == "day":
        events = events.annotate(group=TruncDate("occurred_at", tzinfo=zoneinfo.ZoneInfo(tz_name)))
    elif group_by == "model":
        events = events.annotate(group=F("model"))
    elif group_by == "service_tier":
        events = events.annotate(group=F("service_tier"))
    else:
        events = events.annotate(group=F("api_key_id"))
    # Aggregates get names no model field has: reusing "cost" would make the unpriced
    # count's filter refer to the SUM instead of the column.
    rows = (
        events.values("group")
        .annotate(
            n_requests=Count("id"),
            sum_input=Sum("input_tokens"),
            sum_output=Sum("output_tokens"),
            sum_cached=Sum("cached_input_tokens"),
            sum_cache_write=Sum("cache_write_tokens"),
            sum_cache_write_1h=Sum("cache_write_1h_tokens"),
            sum_reasoning=Sum("reasoning_tokens"),
            sum_cost=Sum("cost"),
            n_unpriced=Count("id", filter=Q(cost__isnull=True)),
        )
        .order_by("group")
    )
    return [
        {
            "group": row["group"].isoformat() if isinstance(row["group"], dt.date) else row["group"],
            "requests": row["n_requests"],
            "input_tokens": row["sum_input"] or 0,
            "output_tokens": row["sum_output"] or 0,
            "cached_input_tokens": row["sum_cached"] or 0,
            "cache_write_tokens": row["sum_cache_write"] or 0,
            "cache_write_1h_tokens": row["sum_cache_write_1h"] or 0,
            "reasoning_tokens": row["sum_reasoning"] or 0,
            "cost": row["sum_cost"] if row["sum_cost"] is not None else Decimal(0),
            "unpriced_requests": row["n_unpriced"],
        }
        for row in rows
    ]


def event_for_tenant(*, tenant_id: int, event_id: int) -> UsageEvent | None:
    return UsageEvent.objects.filter(tenant_id=tenant_id, pk=event_id).first()


# --- Dashboards: read the DailyUsage rollup, never the raw events ---------------------------
# Days are the tenant's local days (the rollup cuts them); `end_day` is included.

_ROLLUP_SUMS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cost")


def _rollup_row(row: dict[str, Any]) -> dict[str, Any]:
    data = {name: row.get(name) or 0 for name in _ROLLUP_SUMS}
    data["cost"] = row.get("cost") if row.get("cost") is not None else Decimal(0)
    data["tokens"] = data["input_tokens"] + data["output_tokens"]
    return data


def _rollups(
    *,
    tenant_id: int,
    start_day: dt.date | None,
    end_day: dt.date | None,
    api_key_id: int | None = None,
    model: str = "",
) -> QuerySet[DailyUsage]:
    rows = DailyUsage.objects.filter(tenant_id=tenant_id)
    if start_day is not None:
        rows = rows.filter(day__gte=start_day)
    if end_day is not None:
        rows = rows.filter(day__lte=end_day)
    if api_key_id is not None:
        rows = rows.filter(api_key_id=api_key_id)
    if model:
        rows = rows.filter(model=model)
    return rows


def _sums() -> dict[str, Any]:
    return {name: Sum(name) for name in _ROLLUP_SUMS}


def usage_daily_series(*, tenant_id: int, start_day: dt.date, end_day: dt.date) -> list[dict[str, Any]]:
    """One row per local day in [start_day, end_day], zeros where nothing was used."""
    by_day = {
        row["day"]: _rollup_row(row)
        for row in _rollups(tenant_id=tenant_id, start_day=start_day, end_day=end_day)
        .values("day")
        .annotate(**_sums())
        .order_by("day")
    }
    series = []
    day = start_day
    while day <= end_day:
        series.append({"day": day, **by_day.get(day, _rollup_row({}))})
        day += dt.timedelta(days=1)
    return series


def usage_totals(
    *,
    tenant_id: int,
    start_day: dt.date | None = None,
    end_day: dt.date | None = None,
    api_key_id: int | None = None,
    model: str = "",
) -> dict[str, Any]:
    """Requests, tokens by kind and cost over the days (None = unbounded), optionally for one key or model."""
    rows = _rollups(tenant_id=tenant_id, start_day=start_day, end_day=end_day, api_key_id=api_key_id, model=model)
    return _rollup_row(rows.aggregate(**_sums()))


def usage_by_group(*, tenant_id: int, start_day: dt.date, end_day: dt.date, group_by: str) -> list[dict[str, Any]]:
    """Totals per API key (`group` = key id), model or service tier over the days, largest token use first."""
    fields = {"api_key": "api_key_id", "model": "model", "service_tier": "service_tier"}
    if group_by not in fields:
        raise ValueError("group_by must be api_key, model or service_tier")
    field_name = fields[group_by]
    rows = (
        _rollups(tenant_id=tenant_id, start_day=start_day, end_day=end_day)
        .values(field_name)
        .annotate(**_sums())
        .order_by()
    )
    result = [{"group": row[field_name], **_rollup_row(row)} for row in rows]
    result.sort(key=lambda row: (-row["tokens"], str(row["group"])))
    return result


def models_used(*, tenant_id: int) -> list[str]:
    return list(
        DailyUsage.objects.filter(tenant_id=tenant_id).values_list("model", flat=True).distinct().order_by("model")
    )


def spend_by_tenant(*, since_by_tenant: dict[int, dt.date]) -> dict[int, dict[str, Any]]:
    """Totals per tenant from each tenant's own start day (e.g. its local month start) to now."""
    by_start: dict[dt.date, list[int]] = {}
    for tenant_id, since in since_by_tenant.items():
        by_start.setdefault(since, []).append(tenant_id)
    if not by_start:
        return {}
    condition = Q()
    for since, tenant_ids in by_start.items():
        condition |= Q(tenant_id__in=tenant_ids, day__gte=since)
    rows = DailyUsage.objects.filter(condition).values("tenant_id").annotate(**_sums()).order_by()
    return {row["tenant_id"]: _rollup_row(row) for row in rows}


def top_tenants(*, start_day: dt.date, end_day: dt.date, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    """The platform's largest tenants over the days, by tokens and by cost (`group` = tenant id)."""
    rows = [
        {"group": row["tenant_id"], **_rollup_row(row)}
        for row in DailyUsage.objects.filter(day__gte=start_day, day__lte=end_day)
        .values("tenant_id")
        .annotate(**_sums())
        .order_by()
    ]
    return {
        "tokens": sorted(rows, key=lambda row: -row["tokens"])[:limit],
        "cost": sorted(rows, key=lambda row: -row["cost"])[:limit],
    }


# --- The usage explorer: raw events, keyset-paginated (no COUNT over millions) --------------


@dataclass(frozen=True)
class EventFilter:
    tenant_id: int
    start: dt.datetime  # UTC, included
    end: dt.datetime  # UTC, excluded
    api_key_id: int | None = None
    model: str = ""


def _filtered_events(event_filter: EventFilter) -> QuerySet[UsageEvent]:
    events = UsageEvent.objects.filter(
        tenant_id=event_filter.tenant_id, occurred_at__gte=event_filter.start, occurred_at__lt=event_filter.end
    )
    if event_filter.api_key_id is not None:
        events = events.filter(api_key_id=event_filter.api_key_id)
    if event_filter.model:
        events = events.filter(model=event_filter.model)
    return events.order_by("-occurred_at", "-id")


EVENT_COLUMNS = (
    "id",
    "occurred_at",
    "request_id",
    "api_key_id",
    "model",
    "service_tier",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost",
    "currency",
    "latency_ms",
    "ttft_ms",  # relayed calls: time to first token, and the upstream that served them
    "upstream",
)


def events_page(
    *, event_filter: EventFilter, after: tuple[dt.datetime, int] | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], tuple[dt.datetime, int] | None]:
    """Newest first. `after` is the (occurred_at, id) of the last row already shown; returns the
    rows and the cursor of the next page (None on the last page). Reads limit + 1 rows."""
    events = _filtered_events(event_filter).values(*EVENT_COLUMNS)
    rows, cursor = keyset_page(events, key=("occurred_at", "id"), after=after, limit=limit)
    return rows, (cursor[0], cursor[1]) if cursor else None


def events_iter(*, event_filter: EventFilter, chunk_size: int = 2000) -> Iterator[dict[str, Any]]:
    """Every event the filter matches, newest first, streamed from a server-side cursor."""
    rows: Iterator[dict[str, Any]] = (
        _filtered_events(event_filter).values(*EVENT_COLUMNS).iterator(chunk_size=chunk_size)
    )
    return rows


# --- Invoicing: rated usage per month, model, price version and tier ---------------------------


@dataclass(frozen=True, slots=True)
class RatedUsage:
    """Usage summed per (tenant-local month, model, price version, context tier, service tier).

    Token counts follow the event's convention: input_tokens includes the cached-read and
    cache-write tokens. `cost` is the exact sum of the events' unrounded costs; price_id None
    groups the unpriced events (cost None).
    """

    month: dt.date  # first day of the tenant-local month the usage occurred in
    model: str
    price_id: int | None
    long_context: bool  # the tier choice stored at rating (UsageEvent.long_context): the tier's rates
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost: Decimal | None
    service_tier: str = "default"  # the events' UsageEvent.service_tier
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0


def rated_usage_by_price(
    *,
    tenant_id: int,
    tz_name: str,
    occurred_before: dt.datetime,
    occurred_from: dt.datetime | None = None,
    received_from: dt.datetime | None = None,
    received_before: dt.datetime | None = None,
    exclude_occurred: tuple[tuple[dt.datetime, dt.datetime], ...] = (),
) -> list[RatedUsage]:
    """Rated usage of one tenant over [occurred_from, occurred_before) and, when given,
    [received_from, received_before); `exclude_occurred` drops [start, end) ranges."""
    events = UsageEvent.objects.filter(tenant_id=tenant_id, occurred_at__lt=occurred_before)
    if occurred_from is not None:
        events = events.filter(occurred_at__gte=occurred_from)
    if received_from is not None:
        events = events.filter(received_at__gte=received_from)
    if received_before is not None:
        events = events.filter(received_at__lt=received_before)
    for start, end in exclude_occurred:
        events = events.exclude(occurred_at__gte=start, occurred_at__lt=end)
    rows = (
        events.annotate(
            month=TruncMonth("occurred_at", tzinfo=zoneinfo.ZoneInfo(tz_name)),
        )
        .values("month", "model", "price_id", "long_context", "service_tier")
        .annotate(
            requests=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cached_input_tokens=Sum("cached_input_tokens"),
            cache_write_tokens=Sum("cache_write_tokens"),
            cache_write_1h_tokens=Sum("cache_write_1h_tokens"),
            reasoning_tokens=Sum("reasoning_tokens"),
            cost=Sum("cost"),
        )
        .order_by("month", "model", "price_id", "long_context", "service_tier")
    )
    return [
        RatedUsage(
            month=row["month"].date() if isinstance(row["month"], dt.datetime) else row["month"],
            model=row["model"],
            price_id=row["price_id"],
            long_context=row["long_context"],
            requests=row["requests"],
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            cached_input_tokens=row["cached_input_tokens"] or 0,
            cache_write_tokens=row["cache_write_tokens"] or 0,
            cost=row["cost"],
            service_tier=row["service_tier"],
            cache_write_1h_tokens=row["cache_write_1h_tokens"] or 0,
            reasoning_tokens=row["reasoning_tokens"] or 0,
        )
        for row in rows
    ]


# --- Alerts: spend so far, and the recent daily pace --------------------------------------


def usage_so_far(
    *, tenant_id: int, tz_name: str, start_day: dt.date | None, now: dt.datetime, api_key_id: int | None = None
) -> dict[str, Any]:
    """Totals from local day `start_day` (None: ever) up to `now`, current to the last event.

    Days before today come from the rollup; today comes from the events themselves (the
    rollup of today may be minutes behind, and alerts must see the batch that just arrived).
    """
    today = now.astimezone(zoneinfo.ZoneInfo(tz_name)).date()
    totals = _rollup_row({})
    if start_day is None or start_day < today:
        yesterday = today - dt.timedelta(days=1)
        totals = usage_totals(tenant_id=tenant_id, start_day=start_day, end_day=yesterday, api_key_id=api_key_id)
    today_start = dt.datetime.combine(today, dt.time.min, tzinfo=zoneinfo.ZoneInfo(tz_name))
    events = UsageEvent.objects.filter(tenant_id=tenant_id, occurred_at__gte=today_start, occurred_at__lte=now)
    if api_key_id is not None:
        events = events.filter(api_key_id=api_key_id)
    # Aggregate names must not shadow the model's fields (see usage_aggregate).
    live = events.aggregate(n=Count("id"), **{f"sum_{name}": Sum(name) for name in _ROLLUP_SUMS[1:]})
    live_row = _rollup_row({"requests": live["n"], **{name: live[f"sum_{name}"] for name in _ROLLUP_SUMS[1:]}})
    return _rollup_row({name: totals[name] + live_row[name] for name in _ROLLUP_SUMS})


def usage_per_day(
    *, tenant_id: int, start_day: dt.date, end_day: dt.date, api_key_id: int | None = None
) -> dict[dt.date, dict[str, Any]]:
    """Rolled-up totals per local day in [start_day, end_day] (days without usage are absent)."""
    rows = (
        _rollups(tenant_id=tenant_id, start_day=start_day, end_day=end_day, api_key_id=api_key_id)
        .values("day")
        .annotate(**_sums())
        .order_by("day")
    )
    return {row["day"]: _rollup_row(row) for row in rows}


# --- Unpriced usage (operators' page, gauge, staff alert) -------------------------------------


@dataclass(frozen=True)
class UnpricedUsage:
    """Still-unpriced events of one tenant and model (the partial index usage_event_unpriced)."""

    tenant_id: int
    model: str
    events: int  # all still unpriced
    recent: int  # of those, received in the recent window
    oldest: dt.datetime  # the earliest occurred_at among them
    last_received: dt.datetime


def unpriced_usage(*, now: dt.datetime, recent: dt.timedelta, limit: int | None = 100) -> list[UnpricedUsage]:
    """Per tenant and model, the events stored without a price, most first (at most `limit` rows)."""
    rows = (
        UsageEvent.objects.filter(cost__isnull=True)
        .values("tenant_id", "model")
        .annotate(
            n=Count("id"),
            n_recent=Count("id", filter=Q(received_at__gte=now - recent)),
            first=Min("occurred_at"),
            last=Max("received_at"),
        )
        .order_by("-n", "tenant_id", "model")
    )
    if limit is not None:
        rows = rows[:limit]
    return [
        UnpricedUsage(row["tenant_id"], row["model"], row["n"], row["n_recent"], row["first"], row["last"])
        for row in rows
    ]


def unpriced_by_model() -> dict[str, int]:
    """Still-unpriced events per model name, every tenant together."""
    rows = UsageEvent.objects.filter(cost__isnull=True).values("model").annotate(n=Count("id")).order_by("model")
    return {row["model"]: row["n"] for row in rows}


# --- Archived months (metering/services/archive.py) ---------------------------------------


@dataclass(frozen=True, slots=True)
class ArchivedUsage:
    """What archived (dropped) usage months held for one tenant and tenant-local month."""

    requests: int
    unpriced_requests: int
    cost: Decimal  # unrounded currency units, priced events only


def archived_usage(*, tenant_id: int, month: dt.date, basis: str) -> ArchivedUsage:
    """Usage of `month` (first day, tenant-local) no longer in the usage table, by occurrence
    (basis "occurred") or reception ("received"): what reconciliation adds to the online rows."""
    totals = ArchivedUsageTotal.objects.filter(tenant_id=tenant_id, basis=basis, month=month).aggregate(
        requests=Sum("requests"), unpriced=Sum("unpriced_requests"), cost=Sum("cost")
    )
    return ArchivedUsage(
        requests=totals["requests"] or 0,
        unpriced_requests=totals["unpriced"] or 0,
        cost=totals["cost"] if totals["cost"] is not None else Decimal(0),
    )


# --- Gross margin (resale): revenue, our cost and the margin, from the rollups --------------


@dataclass(frozen=True)
class MarginRow:
    """Revenue (the events' cost at the tenants' prices), our cost (their cost_basis) and the
    gross margin, in one currency, each rounded once to its minor unit; margin = revenue - cost
    exactly. `uncosted` says usage was priced without a cost price (it counts with no cost)."""

    group: str
    currency: str
    requests: int
    revenue: Decimal
    cost: Decimal
    margin: Decimal
    margin_pct: Decimal | None  # of revenue, 2 places; None without revenue
    uncosted: bool


@dataclass(frozen=True)
class MarginReport:
    by_tenant: list[MarginRow]
    by_model: list[MarginRow]
    by_month: list[MarginRow]
    totals: list[MarginRow]  # one per currency (group "total")


def gross_margins(*, start_day: dt.date, end_day: dt.date, tenant_names: dict[int, str]) -> MarginReport:
    """Every tenant's rolled-up usage of the local days [start_day, end_day] by tenant, model and
    month (`tenant_names`: id -> label, the tenants to report). Amounts never mix currencies: a
    tenant's usage is in its plan's currency (its own without a plan)."""
    currencies = dict(
        Tenant.objects.filter(pk__in=list(tenant_names))
        .annotate(usage_currency=Coalesce("price_plan__currency", "currency"))
        .values_list("pk", "usage_currency")
    )
    rows = (
        DailyUsage.objects.filter(tenant_id__in=list(tenant_names), day__gte=start_day, day__lte=end_day)
        .annotate(month=TruncMonth("day"))
        .values("tenant_id", "model", "month")
        .annotate(requests=Sum("requests"), revenue=Sum("cost"), cost_basis=Sum("cost_basis"))
        .order_by()
    )
    groups: dict[str, dict[tuple[str, str], list[Any]]] = {"tenant": {}, "model": {}, "month": {}, "total": {}}
    for row in rows:
        currency = currencies[row["tenant_id"]]
        month = row["month"].strftime("%Y-%m") if row["month"] is not None else ""
        for kind, label in (
            ("tenant", tenant_names[row["tenant_id"]]),
            ("model", row["model"]),
            ("month", month),
            ("total", "total"),
        ):
            acc = groups[kind].setdefault((label, currency), [0, Decimal(0), Decimal(0), False])
            acc[0] += row["requests"] or 0
            acc[1] += row["revenue"] or 0
            acc[2] += row["cost_basis"] or 0
            acc[3] = acc[3] or (bool(row["revenue"]) and not row["cost_basis"])
    reports = {
        kind: [_margin_row(label, cur, *acc) for (label, cur), acc in found.items()] for kind, found in groups.items()
    }
    return MarginReport(
        by_tenant=sorted(reports["tenant"], key=lambda r: (r.currency, -r.revenue, r.group)),
        by_model=sorted(reports["model"], key=lambda r: (r.currency, -r.revenue, r.group)),
        by_month=sorted(reports["month"], key=lambda r: (r.group, r.currency)),
        totals=sorted(reports["total"], key=lambda r: r.currency),
    )


def _margin_row(  # noqa: PLR0917 - one accumulator, unpacked
    group: str, currency: str, requests: int, revenue: Decimal, cost: Decimal, uncosted: bool
) -> MarginRow:
    # The percentage from the exact sums; the amounts rounded once each, margin their difference.
    pct = ((revenue - cost) * 100 / revenue).quantize(Decimal("0.01"), rounding=ROUNDING) if revenue else None
    revenue, cost = round_to_currency(revenue, currency), round_to_currency(cost, currency)
    return MarginRow(group, currency, requests, revenue, cost, revenue - cost, pct, uncosted)
