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
import functools
import time
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.db.models.functions import TruncHour
from django.utils import timezone

from accounts.models import Tenant
from billing.periods import EARLIEST, day_period, local_date
from billing.services import tenant_jobs
from billing.services.tenant_jobs import NOT_THE_TENANTS, TenantJob
from metering.models import DailyUsage, RollupCursor, UsageArchive, UsageEvent

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
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "cost_basis",
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
SELECT e.tenant_id, e.api_key_id, e.model, e.service_tier, count(*), sum(e.input_tokens), sum(e.output_tokens),
    sum(e.cached_input_tokens), sum(e.cache_write_tokens), coalesce(sum(e.cost), 0), count(*) - count(e.cost),
    sum(e.cache_write_1h_tokens), sum(e.reasoning_tokens), coalesce(sum(e.cost_basis), 0)
FROM {EVENTS} e
JOIN unnest(%(tenants)s::bigint[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
    AS r(tenant_id, day_start, day_end)
    ON r.tenant_id = e.tenant_id AND e.occurred_at >= r.day_start AND e.occurred_at < r.day_end
WHERE e.occurred_at >= %(lo)s AND e.occurred_at < %(hi)s
GROUP BY e.tenant_id, e.api_key_id, e.model, e.service_tier
"""  # noqa: S608
_WRITE_SQL = f"""
WITH agg AS (
    SELECT * FROM unnest(
        %(g_tenant)s::bigint[], %(g_key)s::bigint[], %(g_model)s::text[], %(g_tier)s::text[],
        %(g_requests)s::bigint[], %(g_input)s::bigint[], %(g_output)s::bigint[], %(g_cached)s::bigint[],
        %(g_cache_write)s::bigint[], %(g_cost)s::numeric[], %(g_unpriced)s::bigint[], %(g_write_1h)s::bigint[],
        %(g_reasoning)s::bigint[], %(g_cost_basis)s::numeric[]
    ) AS a(tenant_id, api_key_id, model, service_tier, {_COLS})
), upserted AS (
    INSERT INTO {DAILY} AS d (tenant_id, api_key_id, model, service_tier, day, {_COLS}, updated_at)
    SELECT tenant_id, api_key_id, model, service_tier, %(day)s, {_COLS}, now() FROM agg
    ON CONFLICT (tenant_id, api_key_id, model, service_tier, day) DO UPDATE SET {_SET}
    WHERE ({_CURRENT}) IS DISTINCT FROM ({_EXCLUDED})
    RETURNING 1
), pruned AS (
    DELETE FROM {DAILY} d WHERE d.day = %(day)s AND d.tenant_id = ANY(%(tenants)s::bigint[])
    AND NOT EXISTS (
        SELECT 1 FROM agg WHERE agg.tenant_id = d.tenant_id AND agg.api_key_id = d.api_key_id AND agg.model = d.model
        AND agg.service_tier = d.service_tier
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted), (SELECT count(*) FROM pruned)
"""  # noqa: S608
_GROUP_PARAMS = (
    "g_tenant", "g_key", "g_model", "g_tier", "g_requests", "g_input", "g_output", "g_cached", "g_cache_write",
    "g_cost", "g_unpriced", "g_write_1h", "g_reasoning", "g_cost_basis",
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
            params: dict[str, Any] = {
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
    groups: dict[tuple[int, str, str], dict[str, Any]] = {}
    events = UsageEvent.objects.filter(tenant_id=tenant_id, occurred_at__gte=start, occurred_at__lt=end).values_list(
        "api_key_id", "model", "service_tier", "input_tokens", "output_tokens", "cached_input_tokens",
        "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cost", "cost_basis",
    )  # fmt: skip
    for (
        api_key_id,
        model,
        tier,
        input_tokens,
        output_tokens,
        cached,
        cache_write,
        write_1h,
        reasoning,
        cost,
        cost_basis,
    ) in events.iterator():
        row = groups.setdefault(
            (api_key_id, model, tier), dict.fromkeys(_FIGURES, 0) | {"cost": Decimal(0), "cost_basis": Decimal(0)}
        )
        if cost_basis is not None:
            row["cost_basis"] += cost_basis
        row["requests"] += 1
        row["input_tokens"] += input_tokens
        row["output_tokens"] += output_tokens
        row["cached_input_tokens"] += cached
        row["cache_write_tokens"] += cache_write
        row["cache_write_1h_tokens"] += write_1h
        row["reasoning_tokens"] += reasoning
        if cost is None:
            row["unpriced_requests"] += 1
        else:
            row["cost"] += cost
    deleted, _ = DailyUsage.objects.filter(tenant_id=tenant_id, day=day).delete()
    DailyUsage.objects.bulk_create(
        DailyUsage(tenant_id=tenant_id, api_key_id=api_key_id, model=model, service_tier=tier, day=day, **figures)
        for (api_key_id, model, tier), figures in groups.items()
    )
    return len(groups), len(groups), max(deleted - len(groups), 0)


# --- Which days -----------------------------------------------------------------------------


def _days_of_hours(
    hours: Iterable[tuple[int, dt.datetime]], zones: dict[int, str], job: TenantJob, resume_from: dt.datetime | None
) -> dict[int, set[dt.date]]:
    """(tenant, UTC hour) -> the tenant-local days that hour overlaps (two for :30 zones).

    An hour that cannot be placed in its tenant's zone (an event stored from year 1, a zone name
    no longer known) is left out and its tenant recorded as failing; its other hours and the
    other tenants are not affected.
    """
    by_tenant: dict[int, list[dt.datetime]] = defaultdict(list)
    for tenant_id, hour in hours:
        by_tenant[tenant_id].append(hour)
    days: dict[int, set[dt.date]] = {}
    for tenant_id, tenant_hours in by_tenant.items():
        place = functools.partial(job.run, tenant_id, resume_from=resume_from, settle=False, savepoint=False)
        tenant_days = place(functools.partial(_local_days, tenant_hours, zones[tenant_id]))
        if tenant_days is None:  # hour by hour, to keep the ones that can be placed
            placed = [place(functools.partial(_local_days, [hour], zones[tenant_id])) for hour in tenant_hours]
            tenant_days = set().union(*(one for one in placed if one is not None))
        if tenant_days:
            days[tenant_id] = tenant_days
    return days


def _local_days(hours: list[dt.datetime], tz_name: str) -> set[dt.date]:
    last = dt.timedelta(minutes=59, seconds=59)
    return {local_date(hour, tz_name) for hour in hours} | {local_date(hour + last, tz_name) for hour in hours}


def rollup_pending_days(
    *, received_from: dt.datetime, job: TenantJob, tenant_ids: Iterable[int] | None = None
) -> dict[int, set[dt.date]]:
    """Tenant-local days touched by events received at or after `received_from` (of `tenant_ids`)."""
    events = UsageEvent.objects.filter(received_at__gte=received_from)
    if tenant_ids is not None:
        events = events.filter(tenant_id__in=list(tenant_ids))
    hours = (
        events.annotate(hour=TruncHour("occurred_at", tzinfo=dt.UTC))
        .values_list("tenant_id", "hour")
        .distinct()
        .order_by()
    )
    pairs = list(hours)
    zones = dict(Tenant.objects.filter(pk__in={tenant_id for tenant_id, _ in pairs}).values_list("pk", "timezone"))
    return _days_of_hours(pairs, zones, job, received_from)


def _rebuild_days(
    days: dict[int, set[dt.date]], progress: Progress | None, job: TenantJob, resume_from: dt.datetime | None = None
) -> list[DayResult]:
    """One statement per local day, for every tenant that needs that day.

    When a day's statement fails, the day is rebuilt tenant by tenant: the tenants whose data
    breaks it are recorded as failing (`job`, with `resume_from`), the others get their rows.
    """
    zones = dict(Tenant.objects.filter(pk__in=days).values_list("pk", "timezone"))
    archived = _archived_months()
    by_day: dict[dt.date, dict[int, str]] = defaultdict(dict)
    for tenant_id, tenant_days in days.items():
        for day in tenant_days:
            if archived and _touches_archive(day, zones[tenant_id], archived):
                continue  # its events (some of them) left for an archive: the rollup is all that is left
            by_day[day][tenant_id] = zones[tenant_id]
    results = []
    for day in sorted(by_day):
        tenants = by_day[day]
        try:
            result = rollup_day(day=day, tenants=tenants)
        except NOT_THE_TENANTS:
            raise
        except Exception:  # noqa: BLE001 - some tenant's data: find which, tenant by tenant, below
            result = _rebuild_day_per_tenant(day, tenants, job, resume_from)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def _archived_months() -> list[tuple[dt.datetime, dt.datetime]]:
    """[start, end) in UTC of the months whose events were archived (metering/services/archive.py)."""
    months = UsageArchive.objects.filter(status=UsageArchive.Status.DROPPED).values_list("period", flat=True)
    bounds = []
    for month in months:
        start = dt.datetime.combine(month, dt.time(), tzinfo=dt.UTC)
        bounds.append(
            (start, dt.datetime.combine((month + dt.timedelta(days=32)).replace(day=1), dt.time(), tzinfo=dt.UTC))
        )
    return bounds


def _touches_archive(day: dt.date, tz_name: str, archived: list[tuple[dt.datetime, dt.datetime]]) -> bool:
    """True when the tenant-local day overlaps an archived month: rebuilding it from the events
    still online would lose what the archive took, so its rollup rows are kept as they are."""
    try:
        period = day_period(day, tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False  # the rebuild records the tenant's failure
    return any(period.start < end and period.end > start for start, end in archived)


def _rebuild_day_per_tenant(
    day: dt.date, tenants: dict[int, str], job: TenantJob, resume_from: dt.datetime | None
) -> DayResult:
    started = time.perf_counter()
    done = [
        job.run(
            tenant_id,
            functools.partial(rollup_day, day=day, tenants={tenant_id: tenants[tenant_id]}),
            resume_from=resume_from,
            settle=False,
        )
        for tenant_id in sorted(tenants)
    ]
    ok = [result for result in done if result is not None]
    return DayResult(
        day,
        len(ok),
        sum(result.groups for result in ok),
        sum(result.written for result in ok),
        sum(result.deleted for result in ok),
        time.perf_counter() - started,
    )


def rollup_refresh(
    *, now: dt.datetime | None = None, progress: Progress | None = None, job: TenantJob | None = None
) -> list[DayResult]:
    """Incremental: rebuild the tenant-days of events received since the last refresh.

    The cursor is global and always moves on. A tenant whose days fail is recorded (JobFailure,
    with the scan position to resume from) and, once its retry is due, rescanned from there on a
    later run: its failure then clears if every one of its days rebuilds.
    """
    now = now or timezone.now()
    job = job or TenantJob.begin(tenant_jobs.ROLLUP, now=now)
    cursor, _ = RollupCursor.objects.get_or_create(name=INCREMENTAL, defaults={"received_from": _EPOCH})
    scan_from = max(cursor.received_from - dt.timedelta(seconds=settings.ROLLUP_OVERLAP_SECONDS), _EPOCH)
    days = rollup_pending_days(received_from=scan_from, job=job)
    retries = job.retries_due()
    for failure in retries:
        since = min(failure.resume_from or scan_from, scan_from)
        for tenant_id, tenant_days in rollup_pending_days(
            received_from=since, job=job, tenant_ids=[failure.tenant_id]
        ).items():
            days.setdefault(tenant_id, set()).update(tenant_days)
    results = _rebuild_days(days, progress, job, resume_from=scan_from)
    for failure in retries:
        job.succeed(failure.tenant_id)  # not if it failed again in this run
    # Never move the cursor backwards (another refresh may have finished after this one began).
    RollupCursor.objects.filter(name=INCREMENTAL, received_from__lt=now).update(received_from=now)
    return results


def rollup_finalize(
    *, now: dt.datetime | None = None, progress: Progress | None = None, job: TenantJob | None = None
) -> list[DayResult]:
    """Rebuild each tenant's previous local day during the first hours after its midnight."""
    now = now or timezone.now()
    job = job or TenantJob.begin(tenant_jobs.ROLLUP, now=now)
    days: dict[int, set[dt.date]] = {}
    for tenant_id, tz_name in Tenant.objects.values_list("pk", "timezone"):
        local_now = job.run(tenant_id, functools.partial(_local_now, now, tz_name), settle=False, savepoint=False)
        if local_now is not None and local_now.hour < FINALIZE_HOURS:
            days[tenant_id] = {local_now.date() - dt.timedelta(days=1)}
    return _rebuild_days(days, progress, job)


def _local_now(now: dt.datetime, tz_name: str) -> dt.datetime:
    return now.astimezone(zoneinfo.ZoneInfo(tz_name))


def rollup_date(
    *, day: dt.date, tenant_id: int | None = None, progress: Progress | None = None, job: TenantJob | None = None
) -> list[DayResult]:
    """Rebuild one local day for one tenant, or for every tenant."""
    job = job or TenantJob.begin(tenant_jobs.ROLLUP)
    tenants = Tenant.objects.filter(pk=tenant_id) if tenant_id is not None else Tenant.objects.all()
    return _rebuild_days({pk: {day} for pk in tenants.values_list("pk", flat=True)}, progress, job)


def rollup_tenant(*, tenant_id: int, progress: Progress | None = None, job: TenantJob | None = None) -> list[DayResult]:
    """Rebuild every day of one tenant, from its first event to its last."""
    job = job or TenantJob.begin(tenant_jobs.ROLLUP)
    tenant = Tenant.objects.get(pk=tenant_id)
    bounds = UsageEvent.objects.filter(tenant_id=tenant_id).aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    days = job.run(tenant_id, lambda: _tenant_days(tenant, bounds["first"], bounds["last"]), settle=False)
    return _rebuild_days({tenant_id: days}, progress, job) if days else []


def _tenant_days(tenant: Tenant, first: dt.datetime | None, last: dt.datetime | None) -> set[dt.date]:
    days: set[dt.date] = set()
    if first is not None and last is not None:
        day, end = local_date(first, tenant.timezone), local_date(last, tenant.timezone)
        while day <= end:
            days.add(day)
            day += dt.timedelta(days=1)
    stale = DailyUsage.objects.filter(tenant_id=tenant.pk).exclude(day__in=days)
    days.update(stale.values_list("day", flat=True).distinct())
    return days


def rollup_all(*, progress: Progress | None = None, job: TenantJob | None = None) -> list[DayResult]:
    """Rebuild every local day that has events or rows, for every tenant (day by day).

    Days before EARLIEST (events stored before timestamps were bounded) are left out: no
    tenant-local day can be cut there; `rollup --tenant` names the tenant such an event breaks.
    """
    job = job or TenantJob.begin(tenant_jobs.ROLLUP)
    bounds = UsageEvent.objects.filter(occurred_at__gte=EARLIEST).aggregate(
        first=Min("occurred_at"), last=Max("occurred_at")
    )
    days = set(DailyUsage.objects.values_list("day", flat=True).distinct())
    if bounds["first"] is not None:
        day = bounds["first"].date() - dt.timedelta(days=1)
        while day <= bounds["last"].date() + dt.timedelta(days=1):
            days.add(day)
            day += dt.timedelta(days=1)
    tenant_ids = list(Tenant.objects.values_list("pk", flat=True))
    results = []
    for day in sorted(days):
        results.extend(_rebuild_days({tenant_id: {day} for tenant_id in tenant_ids}, progress, job))
    return results
