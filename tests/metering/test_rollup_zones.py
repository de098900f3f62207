"""Rollup day boundaries in zones that are not whole hours from UTC, and across a DST change.

Dates are computed from now (the ingest horizon is relative to now), so these run in any year.
"""

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from metering.models import DailyUsage
from tests import factories
from tests.conftest import Credential

pytestmark = pytest.mark.django_db


def tenant_with_key(zone: str) -> tuple:
    tenant = factories.TenantFactory(timezone=zone)
    return tenant, Credential(*factories.issue_api_key(tenant))


def post_at(credential, *moments: dt.datetime) -> None:
    events = [factories.EventBodyFactory(timestamp=moment.isoformat()) for moment in moments]
    response = credential.post("/api/v1/events/batch", {"events": events})
    assert response.json()["accepted"] == len(moments), response.content


def requests_by_day(tenant) -> dict[dt.date, int]:
    return dict(DailyUsage.objects.filter(tenant=tenant).values_list("day", "requests"))


def last_october_dst_sunday() -> dt.date:
    """The latest last-Sunday-of-October at least two days in the past (Europe leaves DST)."""
    today = timezone.now().date()
    year = today.year
    while True:
        day = dt.date(year, 10, 31)
        day -= dt.timedelta(days=(day.weekday() - 6) % 7)
        if day <= today - dt.timedelta(days=2):
            return day
        year -= 1


def test_half_hour_zone_days_start_at_18_30_utc(plan):
    tenant, key = tenant_with_key("Asia/Kolkata")  # UTC+05:30
    day = timezone.now().date() - dt.timedelta(days=3)
    midnight = dt.datetime.combine(day, dt.time(18, 30), tzinfo=dt.UTC)  # local midnight of day + 1
    post_at(
        key,
        midnight - dt.timedelta(minutes=1),  # 23:59 local, day
        midnight - dt.timedelta(minutes=29),  # 23:31 local, day (same UTC hour 18:00)
        midnight,  # 00:00 local, day + 1
        midnight + dt.timedelta(minutes=29),  # 00:59 local, day + 1 (UTC hour 18:00 too)
        midnight + dt.timedelta(hours=23, minutes=59),  # 23:59 local, day + 1
    )

    call_command("rollup", stdout=io.StringIO())

    assert requests_by_day(tenant) == {day: 2, day + dt.timedelta(days=1): 3}


def test_the_25_hour_day_when_berlin_leaves_dst(plan):
    tenant, key = tenant_with_key("Europe/Berlin")
    sunday = last_october_dst_sunday()
    saturday_midnight_utc = dt.datetime.combine(sunday, dt.time(0), tzinfo=dt.UTC) - dt.timedelta(hours=2)  # CEST
    monday_midnight_utc = dt.datetime.combine(sunday, dt.time(23), tzinfo=dt.UTC)  # CET: 25 hours later
    assert monday_midnight_utc - saturday_midnight_utc == dt.timedelta(hours=25)
    post_at(
        key,
        saturday_midnight_utc - dt.timedelta(seconds=1),  # Saturday 23:59:59 CEST
        saturday_midnight_utc,  # Sunday 00:00 CEST
        dt.datetime.combine(sunday, dt.time(0, 30), tzinfo=dt.UTC),  # 02:30 CEST, before the change
        dt.datetime.combine(sunday, dt.time(1, 30), tzinfo=dt.UTC),  # 02:30 CET, the repeated hour
        monday_midnight_utc - dt.timedelta(seconds=1),  # Sunday 23:59:59 CET
        monday_midnight_utc,  # Monday 00:00 CET
    )

    call_command("rollup", stdout=io.StringIO())
    assert requests_by_day(tenant) == {
        sunday - dt.timedelta(days=1): 1,
        sunday: 4,
        sunday + dt.timedelta(days=1): 1,
    }
    call_command("rollup", "--date", sunday.isoformat(), stdout=io.StringIO())  # a rebuild of that day alone
    assert requests_by_day(tenant)[sunday] == 4
