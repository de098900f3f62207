"""Daily rollups: DailyUsage rebuilt from UsageEvent per tenant-local day, idempotently.

A rebuild of a local day (for one tenant or many at once) computes the day's rows from one
aggregate query and makes the table match it in the same transaction: on PostgreSQL the
GROUP BY (parallel) then one INSERT ... ON CONFLICT DO UPDATE plus a DELETE of groups that no
longer exist; on SQLite (the embedded default) a Python sum (exact Decimals) then delete +
insert. Recomputing a day therefore yields identical rows, and a row whose figures did not
change is not even rewritten.

Which days to rebuild:
- incremental (`rollup_refresh`, every few minutes): the tenant-days touched by events
  *received* since the last run (minus an overlap for commit lag and clock skew), so late
  events are folded into the day they occurred on, however old;
- final (`rollup_finalize`, hourly): each tenant's previous local day, in the first hours
  after its local midnight;
- by hand: `manage.py rollup --date D [--tenant S]`.

Two rebuilds of the same tenant-day (two workers, two schedulers) are serialized by a
PostgreSQL advisory transaction lock, so the one that commits last read everything the first
one read: the result is the same rows whatever the interleaving.
"""

import datetime as dt
import time
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing.periods import day_period, local_date
from metering.models import DailyUsage, RollupCursor, UsageEvent
from portal.accounts.models import Tenant

EVENTS = UsageEvent._meta.db_table
DAILY = DailyUsage._meta.db_table
INCREMENTAL = "incremental"
# After its local midnight, a tenant's previous day is rebuilt by each hourly finalize run
# for this many hours (one missed run is harmless).
FINALIZE_HOURS = 3
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Advisory lock namespace (two-int form): one transaction lock per tenant-day.
_LOCK_TENANT_DAY = 0x726F6C6C  # "roll"

_FIGURES = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost",
    "unpriced_requests",
)
_COLS = ", ".join(_FIGURES)
_EXCLUDED = ", ".join(f"EXCLUDED.{name}" for name in _FIGURES)
_CURRENT = ", ".join(f"d.{name}" for name in _FIGURES)
_SET = ", ".join(f"{name} = EXCLUDED.{name}" for name in (*_FIGURES, "updated_at"))
# A rebuild of one local day for a set of tenants is two statements in one transaction:
# 1. the aggregate: `ranges` are each tenant's day as a UTC range (computed in Python from its
#    zone, so no per-row time zone arithmetic), the outer occurred_at bounds let PostgreSQL skip
#    the rest of the table (BRIN index). A plain SELECT, so PostgreSQL may run it in parallel
#    (it never parallelizes a statement that writes, a data-modifying CTE included);
# 2. the write: INSERT ... SELECT FROM the aggregate's rows ON CONFLICT DO UPDATE, rewriting only
#    rows whose figures changed, and a DELETE of the rows of groups that no longer exist.
# Identifiers are module constants; every value is a parameter.
_AGGREGATE_SQL = f"""
SELECT e.tenant_id, e.api_key_id, e.model, count(*), sum(e.input_tokens), sum(e.output_tokens),
    sum(e.cached_input_tokens), sum(e.cache_write_tokens), coalesce(sum(e.cost), 0), count(*) - count(e.cost)
FROM {EVENTS} e
JOIN unnest(%(tenants)s::bigint[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
    AS r(tenant_id, day_start, day_end)
    ON r.tenant_id = e.tenant_id AND e.occurred_at >= r.day_start AND e.occurred_at < r.day_end
WHERE e.occurred_at >= %(lo)s AND e.occurred_at < %(hi)s
GROUP BY e.tenant_id, e.api_key_id, e.model
"""  # noqa: S608
_WRITE_SQL = f"""
WITH agg AS (
    SELECT * FROM unnest(
        %(g_tenant)s::bigint[], %(g_key)s::bigint[], %(g_model)s::text[], %(g_requests)s::bigint[],
        %(g_input)s::bigint[], %(g_output)s::bigint[], %(g_cached)s::bigint[], %(g_cache_write)s::bigint[],
        %(g_cost)s::numeric[], %(g_unpriced)s::bigint[]
    ) AS a(tenant_id, api_key_id, model, {_COLS})
), upserted AS (
    INSERT INTO {DAILY} AS d (tenant_id, api_key_id, model, day, {_COLS}, updated_at)
    SELECT tenant_id, api_key_id, model, %(day)s, {_COLS}, now() FROM agg
    ON CONFLICT (tenant_id, api_key_id, model, day) DO UPDATE SET {_SET}
    WHERE ({_CURRENT}) IS DISTINCT FROM ({_EXCLUDED})
    RETURNING 1
), pruned AS (
    DELETE FROM {DAILY} d WHERE d.day = %(day)s AND d.tenant_id = ANY(%(tenants)s::bigint[])
    AND NOT EXISTS (
        SELECT 1 FROM agg WHERE agg.tenant_id = d.tenant_id AND agg.api_key_id = d.api_key_id AND agg.model = d.model
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted), (SELECT count(*) FROM pruned)
"""  # noqa: S608
_GROUP_PARAMS = (
    "g_tenant", "g_key", "g_model", "g_requests", "g_input", "g_output", "g_cached", "g_cache_write", "g_cost",
    "g_unpriced",
)  # fmt: skip


@dataclass(frozen=True)
class DayResult:
    """What one rebuild did: `groups` rows now hold the day, `written` were inserted or
    changed, `deleted` disappeared (their events are gone)."""

    day: dt.date
    tenants: int
    groups: int
    written: int
    deleted: int
    seconds: float


Progress = Callable[[DayResult], None]


def rollup_day(*, day: dt.date, tenants: dict[int, str] | None = None) -> DayResult:
    """Make DailyUsage for local day `day` equal the aggregate of its events, for `tenants`
    ({id: time zone}; default every tenant), each day cut in the tenant's own zone."""
    started = time.perf_counter()
    if tenants is None:
        tenants = dict(Tenant.objects.values_list("pk", "timezone"))
    ids = sorted(tenants)
    periods = [day_period(day, tenants[tenant_id]) for tenant_id in ids]
    with transaction.atomic():
        if connection.vendor == "postgresql" and ids:
            params = {
                "day": day,
                "tenants": ids,
                "starts": [period.start for period in periods],
                "ends": [period.end for period in periods],
                "lo": min(period.start for period in periods),
                "hi": max(period.end for period in periods),
            }
            with connection.cursor() as cursor:
                # Serialize rebuilds of the same tenant-day (ids sorted: no deadlock between two
                # overlapping sets); READ COMMITTED then lets the later one see all the earlier saw.
                keys = sorted({(tenant_id * 1_000_003 + day.toordinal()) % 2**31 for tenant_id in ids})
                cursor.execute(
                    "SELECT count(pg_advisory_xact_lock(%s, k)) FROM (SELECT k FROM unnest(%s::int[]) k ORDER BY k) s",
                    [_LOCK_TENANT_DAY, keys],
                )
                cursor.execute("SET LOCAL work_mem = '64MB'")  # a big day's hash aggregate stays in memory
                cursor.execute(_AGGREGATE_SQL, params)
                rows = cursor.fetchall()
                columns = list(zip(*rows, strict=True)) if rows else [()] * len(_GROUP_PARAMS)
                params |= {name: list(values) for name, values in zip(_GROUP_PARAMS, columns, strict=True)}
                cursor.execute(_WRITE_SQL, params)
                groups = len(rows)
                written, deleted = cursor.fetchone()
        else:
            groups = written = deleted = 0
            for tenant_id, period in zip(ids, periods, strict=True):
                counts = _rebuild_in_python(tenant_id=tenant_id, day=day, start=period.start, end=period.end)
                groups, written, deleted = groups + counts[0], written + counts[1], deleted + counts[2]
    return DayResult(day, len(ids), groups, written, deleted, time.perf_counter() - started)


def _rebuild_in_python(*, tenant_id: int, day: dt.date, start: dt.datetime, end: dt.datetime) -> tuple[int, int, int]:
    """The portable rebuild (SQLite): exact Decimal sums, then delete + insert of the day."""
    groups: dict[tuple[int, str], dict] = {}
    events = UsageEvent.objects.filter(tenant_id=tenant_id, occurred_at__gte=start, occurred_at__lt=end).values_list(
        "api_key_id", "model", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cost"
    )
    for api_key_id, model, input_tokens, output_tokens, cached, cache_write, cost in events.iterator():
        row = groups.setdefault((api_key_id, model), dict.fromkeys(_FIGURES, 0) | {"cost": Decimal(0)})
        row["requests"] += 1
        row["input_tokens"] += input_tokens
        row["output_tokens"] += output_tokens
        row["cached_input_tokens"] += cached
        row["cache_write_tokens"] += cache_write
        if cost is None:
            row["unpriced_requests"] += 1
        else:
            row["cost"] += cost
    deleted, _ = DailyUsage.objects.filter(tenant_id=tenant_id, day=day).delete()
    DailyUsage.objects.bulk_create(
        DailyUsage(tenant_id=tenant_id, api_key_id=api_key_id, model=model, day=day, **figures)
        for (api_key_id, model), figures in groups.items()
    )
    return len(groups), len(groups), max(deleted - len(groups), 0)


# --- Which days -----------------------------------------------------------------------------


def _days_of_hours(hours: Iterable[tuple[int, dt.datetime]], zones: dict[int, str]) -> dict[int, set[dt.date]]:
    """(tenant, UTC hour) -> the tenant-local days that hour overlaps (two for :30 zones)."""
    days: dict[int, set[dt.date]] = defaultdict(set)
    for tenant_id, hour in hours:
        tz_name = zones[tenant_id]
        days[tenant_id].add(local_date(hour, tz_name))
        days[tenant_id].add(local_date(hour + dt.timedelta(minutes=59, seconds=59), tz_name))
    return days


def rollup_pending_days(*, received_from: dt.datetime) -> dict[int, set[dt.date]]:
    """Tenant-local days touched by events received at or after `received_from`."""
    hours = (
        UsageEvent.objects.filter(received_at__gte=received_from)
        .annotate(hour=TruncHour("occurred_at", tzinfo=dt.UTC))
        .values_list("tenant_id", "hour")
        .distinct()
        .order_by()
    )
    pairs = list(hours)
    zones = dict(Tenant.objects.filter(pk__in={tenant_id for tenant_id, _ in pairs}).values_list("pk", "timezone"))
    return _days_of_hours(pairs, zones)


def _rebuild_days(days: dict[int, set[dt.date]], progress: Progress | None) -> list[DayResult]:
    """One statement per local day, for every tenant that needs that day."""
    zones = dict(Tenant.objects.filter(pk__in=days).values_list("pk", "timezone"))
    by_day: dict[dt.date, dict[int, str]] = defaultdict(dict)
    for tenant_id, tenant_days in days.items():
        for day in tenant_days:
            by_day[day][tenant_id] = zones[tenant_id]
    results = []
    for day in sorted(by_day):
        result = rollup_day(day=day, tenants=by_day[day])
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def rollup_refresh(*, now: dt.datetime | None = None, progress: Progress | None = None) -> list[DayResult]:
    """Incremental: rebuild the tenant-days of events received since the last refresh."""
    now = now or timezone.now()
    cursor, _ = RollupCursor.objects.get_or_create(name=INCREMENTAL, defaults={"received_from": _EPOCH})
    scan_from = max(cursor.received_from - dt.timedelta(seconds=settings.ROLLUP_OVERLAP_SECONDS), _EPOCH)
    results = _rebuild_days(rollup_pending_days(received_from=scan_from), progress)
    # Never move the cursor backwards (another refresh may have finished after this one began).
    RollupCursor.objects.filter(name=INCREMENTAL, received_from__lt=now).update(received_from=now)
    return results


def rollup_finalize(*, now: dt.datetime | None = None, progress: Progress | None = None) -> list[DayResult]:
    """Rebuild each tenant's previous local day during the first hours after its midnight."""
    now = now or timezone.now()
    days: dict[int, set[dt.date]] = {}
    for tenant_id, tz_name in Tenant.objects.values_list("pk", "timezone"):
        local_now = now.astimezone(zoneinfo.ZoneInfo(tz_name))
        if local_now.hour < FINALIZE_HOURS:
            days[tenant_id] = {local_now.date() - dt.timedelta(days=1)}
    return _rebuild_days(days, progress)


def rollup_tenant(*, tenant_id: int, progress: Progress | None = None) -> list[DayResult]:
    """Rebuild every day of one tenant, from its first event to its last."""
    tenant = Tenant.objects.get(pk=tenant_id)
    bounds = UsageEvent.objects.filter(tenant_id=tenant_id).aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    days: set[dt.date] = set()
    if bounds["first"] is not None:
        day, last = local_date(bounds["first"], tenant.timezone), local_date(bounds["last"], tenant.timezone)
        while day <= last:
            days.add(day)
            day += dt.timedelta(days=1)
    stale = DailyUsage.objects.filter(tenant_id=tenant_id).exclude(day__in=days)
    days.update(stale.values_list("day", flat=True).distinct())
    return _rebuild_days({tenant_id: days}, progress) if days else []


def rollup_all(*, progress: Progress | None = None) -> list[DayResult]:
    """Rebuild every local day that has events or rows, for every tenant (day by day)."""
    bounds = UsageEvent.objects.aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    days = set(DailyUsage.objects.values_list("day", flat=True).distinct())
    if bounds["first"] is not None:
        day = bounds["first"].date() - dt.timedelta(days=1)
        while day <= bounds["last"].date() + dt.timedelta(days=1):
            days.add(day)
            day += dt.timedelta(days=1)
    results = []
    for day in sorted(days):
        result = rollup_day(day=day)
        results.append(result)
        if progress is not None:
            progress(result)
    return results
