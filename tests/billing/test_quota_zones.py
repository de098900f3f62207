"""Quota windows are the tenant's local days and months: at a half-hour offset (Kolkata, where a
day starts at 18:30 UTC) and across a daylight-saving change (Berlin, whose last Sunday of
October lasts 25 hours). Events go through the batch API one second either side of each cut.

Every event has a distinct power-of-two token count, so a counter's value names its events.
"""

import datetime as dt
import zoneinfo
from decimal import Decimal

import pytest

from billing.models import QuotaCounter
from billing.selectors import quota_usage
from billing.services.quotas import quota_create
from billing.services.reconcile import balances_reconcile
from tests import factories
from tests.conftest import Credential

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("any_past_timestamp")]  # fixed, past dates

SECOND = dt.timedelta(seconds=1)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def _tenant(plan, zone: str) -> tuple:
    tenant = factories.TenantFactory(slug=zone.split("/")[1].lower(), price_plan=plan, timezone=zone)
    factories.topup(tenant, "100.00")
    quota_create(tenant=tenant, metric="tokens", window="day", limit=Decimal(1_000_000), actor_label="t")
    quota_create(tenant=tenant, metric="tokens", window="month", limit=Decimal(1_000_000), actor_label="t")
    return tenant, Credential(*factories.issue_api_key(tenant))


def _post(cred: Credential, moments: list[dt.datetime]) -> dict[dt.datetime, int]:
    tokens = {moment: 100 << n for n, moment in enumerate(moments)}
    events = [
        {
            "request_id": f"e-{n}",
            "model": "gpt-4o",
            "input_tokens": tokens[moment],
            "output_tokens": 0,
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
        }
        for n, moment in enumerate(moments)
    ]
    response = cred.post("/api/v1/events/batch", {"events": events})
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == len(moments)
    return tokens


def _counters(tenant, period: str) -> dict[str, int]:
    """{local start date: tokens} of the tenant-wide cells of `period`; the key's cells agree."""
    rows = QuotaCounter.objects.filter(tenant=tenant, period=period)
    tenant_wide = {r.period_start.isoformat(): r.tokens for r in rows if r.api_key_ref == 0}
    per_key = {r.period_start.isoformat(): r.tokens for r in rows if r.api_key_ref != 0}
    assert per_key == tenant_wide
    return tenant_wide


def _window(tenant, window: str, at: dt.datetime) -> tuple[dt.datetime, dt.datetime, Decimal]:
    [usage] = [u for u in quota_usage(tenant_id=tenant.pk, at=at) if u.window == window]
    return usage.period_start, usage.period_end, usage.used


def test_kolkata_days_and_months_are_cut_at_18_30_utc(backend, plan):
    tenant, cred = _tenant(plan, "Asia/Kolkata")
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")
    day_start = dt.datetime(2026, 3, 10, tzinfo=kolkata).astimezone(dt.UTC)
    next_day = dt.datetime(2026, 3, 11, tzinfo=kolkata).astimezone(dt.UTC)
    april = dt.datetime(2026, 4, 1, tzinfo=kolkata).astimezone(dt.UTC)
    assert (day_start, next_day, april) == (utc(2026, 3, 9, 18, 30), utc(2026, 3, 10, 18, 30), utc(2026, 3, 31, 18, 30))
    t = _post(cred, [day_start - SECOND, day_start, next_day - SECOND, next_day, april - SECOND, april])

    assert _counters(tenant, "day") == {
        "2026-03-09": t[day_start - SECOND],
        "2026-03-10": t[day_start] + t[next_day - SECOND],
        "2026-03-11": t[next_day],
        "2026-03-31": t[april - SECOND],
        "2026-04-01": t[april],
    }
    assert _counters(tenant, "month") == {"2026-03-01": sum(t.values()) - t[april], "2026-04-01": t[april]}
    # The quota's window (what authorize enforces and the API reports) turns over at 18:30 UTC.
    assert _window(tenant, "day", next_day - SECOND) == (day_start, next_day, t[day_start] + t[next_day - SECOND])
    assert _window(tenant, "day", next_day) == (next_day, next_day + dt.timedelta(days=1), t[next_day])
    march = dt.datetime(2026, 3, 1, tzinfo=kolkata).astimezone(dt.UTC)
    assert _window(tenant, "month", april - SECOND) == (march, april, sum(t.values()) - t[april])
    assert _window(tenant, "month", april) == (april, utc(2026, 4, 30, 18, 30), t[april])
    if backend == "redis":
        assert balances_reconcile(tenant_id=tenant.pk, fix=False).clean


def test_berlin_day_of_the_dst_change_lasts_25_hours(backend, plan):
    tenant, cred = _tenant(plan, "Europe/Berlin")
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    change_day = dt.date(2026, 10, 25)  # the last Sunday of October
    assert change_day.weekday() == 6 and (change_day + dt.timedelta(days=7)).month == 11
    day_start = dt.datetime.combine(change_day, dt.time.min, tzinfo=berlin).astimezone(dt.UTC)
    day_end = dt.datetime.combine(change_day + dt.timedelta(days=1), dt.time.min, tzinfo=berlin).astimezone(dt.UTC)
    assert (day_start, day_end) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    # 02:30 happens twice: summer time (00:30 UTC), then winter time (01:30 UTC).
    first = dt.datetime.combine(change_day, dt.time(2, 30), tzinfo=berlin).astimezone(dt.UTC)
    second = dt.datetime.combine(change_day, dt.time(2, 30, fold=1), tzinfo=berlin).astimezone(dt.UTC)
    assert (first, second) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30))
    october = dt.datetime(2026, 10, 1, tzinfo=berlin).astimezone(dt.UTC)
    november = dt.datetime(2026, 11, 1, tzinfo=berlin).astimezone(dt.UTC)
    assert (october, november) == (utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    t = _post(
        cred, [day_start - SECOND, day_start, first, second, day_end - SECOND, day_end, november - SECOND, november]
    )

    assert _counters(tenant, "day") == {
        "2026-10-24": t[day_start - SECOND],
        "2026-10-25": t[day_start] + t[first] + t[second] + t[day_end - SECOND],
        "2026-10-26": t[day_end],
        "2026-10-31": t[november - SECOND],
        "2026-11-01": t[november],
    }
    assert _counters(tenant, "month") == {"2026-10-01": sum(t.values()) - t[november], "2026-11-01": t[november]}
    start, end, used = _window(tenant, "day", day_end - SECOND)
    assert (start, end, end - start) == (day_start, day_end, dt.timedelta(hours=25))
    assert used == t[day_start] + t[first] + t[second] + t[day_end - SECOND]
    assert _window(tenant, "day", day_end)[:2] == (day_end, day_end + dt.timedelta(days=1))
    assert _window(tenant, "month", november - SECOND) == (october, november, sum(t.values()) - t[november])
    assert _window(tenant, "month", november) == (november, utc(2026, 11, 30, 23), t[november])
    if backend == "redis":
        assert balances_reconcile(tenant_id=tenant.pk, fix=False).clean
