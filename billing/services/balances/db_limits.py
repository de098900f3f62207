"""Rate limits on the database alone (the database balance backend): the rule of limits.py.

Buckets are rows of RateLimitBucket, locked in name order for the caller's transaction (a hold
takes them after the wallet row, the order every writer uses); parallel slots are the key's
or tenant's open holds, counted under the wallet row lock that a hold already holds, so N
concurrent holds against M slots admit exactly M.
"""

import datetime as dt

from django.db import connection
from django.db.models import Count, Min

from billing.models import Hold, RateLimitBucket
from billing.services.balances.base import Admission
from billing.services.balances.limits import (
    KEY_SCOPE,
    PARALLEL,
    LimitState,
    RateLimit,
    bucket_take,
    drained,
    elapsed_ms,
)


def _slots(admission: Admission, limit: RateLimit, now: dt.datetime) -> LimitState:
    holds = Hold.objects.filter(tenant_id=admission.tenant_id, status=Hold.Status.OPEN, expires_at__gt=now)
    if limit.scope == KEY_SCOPE:
        holds = holds.filter(api_key_id=admission.api_key_id)
    found = holds.aggregate(used=Count("id"), oldest=Min("expires_at"))
    used = found["used"]
    reset = int(elapsed_ms(now, found["oldest"])) if found["oldest"] else 0
    if used + limit.cost > limit.limit:
        return LimitState(limit, max(limit.limit - used, 0), reset, max(reset, 1))
    return LimitState(limit, limit.limit - used - limit.cost, reset)


def rate_state_commit_mode() -> None:
    """Let the current transaction, which writes rate state only, commit without a WAL flush."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('synchronous_commit', 'off', true)")


def _lock_buckets(names: list[str]) -> dict[str, RateLimitBucket]:
    locked = RateLimitBucket.objects.select_for_update().filter(name__in=names).order_by("name")
    return {row.name: row for row in locked}


def db_limits_take(admission: Admission, now: dt.datetime) -> list[LimitState]:
    """Judge every limit and, when all fit, take them. Call inside the caller's transaction."""
    named = list(zip(admission.limits, admission.limit_names(), strict=True))
    buckets = {name: limit for limit, name in named if limit.kind != PARALLEL}
    rows: dict[str, RateLimitBucket] = {}
    if buckets:
        rows = _lock_buckets(list(buckets))
        missing = [name for name in buckets if name not in rows]
        if missing:  # a limit's first use: create its empty bucket (a racing twin is ignored), lock it
            RateLimitBucket.objects.bulk_create(
                [RateLimitBucket(name=n, level=0, limit=buckets[n].limit, updated_at=now) for n in missing],
                ignore_conflicts=True,
            )
            rows |= _lock_buckets(missing)
    states, levels = [], {}
    for limit, name in named:
        if limit.kind == PARALLEL:
            states.append(_slots(admission, limit, now))
            continue
        row = rows[name]
        levels[name] = drained(row.level, limit.limit, elapsed_ms(row.updated_at, now))
        states.append(bucket_take(limit, levels[name]))
    if any(state.retry_after_ms for state in states):
        return states
    for name, limit in buckets.items():
        row = rows[name]
        row.level, row.limit, row.updated_at = levels[name] + limit.cost, limit.limit, now
    RateLimitBucket.objects.bulk_update(list(rows.values()), ["level", "limit", "updated_at"])
    return states


def db_buckets_correct(corrections: dict[str, int], now: dt.datetime) -> None:
    """Settlement: add each token delta to its bucket (drained to now), never below empty."""
    names = [name for name, delta in corrections.items() if delta]
    if not names:
        return
    rows = list(RateLimitBucket.objects.select_for_update().filter(name__in=names).order_by("name"))
    for row in rows:
        level = drained(row.level, row.limit, elapsed_ms(row.updated_at, now))
        row.level, row.updated_at = max(level + corrections[row.name], 0.0), now
    RateLimitBucket.objects.bulk_update(rows, ["level", "updated_at"])
