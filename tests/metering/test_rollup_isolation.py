"""One tenant's bad data never stops another tenant's rollup.

The bad data is what was stored before timestamps were bounded: an event from year 1, written
here with raw SQL. Its tenant is recorded as failing (log line, counter, JobFailure row on the
ops page) and retried with backoff; every other tenant's days, and the cursor, move on.
"""

import datetime as dt
import io
import logging

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone
from prometheus_client import REGISTRY

from billing.models import JobFailure
from metering.models import DailyUsage, RollupCursor, UsageEvent
from metering.services import rollup
from metering.tasks import rollup_refresh as rollup_refresh_task
from tests.factories import EventBodyFactory

pytestmark = pytest.mark.django_db


def failures_counted(job: str) -> float:
    return REGISTRY.get_sample_value("tokenbill_job_tenant_failures_total", {"job": job}) or 0.0


def post(credential, *moments: dt.datetime) -> list[str]:
    events = [EventBodyFactory(timestamp=moment.isoformat()) for moment in moments]
    response = credential.post("/api/v1/events/batch", {"events": events})
    assert response.json()["accepted"] == len(moments), response.content
    return [event["request_id"] for event in events]


def set_event_times(request_id: str, *, occurred_at: str, received_at: dt.datetime | None = None) -> None:
    """What a row stored before the bounds looks like (or an operator's repair of it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {UsageEvent._meta.db_table} SET occurred_at = %s::timestamptz, "
            "received_at = coalesce(%s, received_at) WHERE request_id = %s",
            [occurred_at, received_at, request_id],
        )


def requests_rolled_up(tenant) -> int:
    return DailyUsage.objects.filter(tenant=tenant).aggregate(total=Sum("requests"))["total"] or 0


@pytest.fixture
def hour_ago() -> dt.datetime:
    return timezone.now() - dt.timedelta(hours=1)


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])  # fails cutting the day / placing the hour
def test_year_one_event_of_one_tenant_does_not_stop_the_others(
    key_a, key_b, tenant_a, tenant_b, hour_ago, zone, client, operator, caplog
):
    tenant_b.timezone = zone
    tenant_b.save(update_fields=["timezone"])
    post(key_a, hour_ago, hour_ago - dt.timedelta(days=1))
    bad, _ = post(key_b, hour_ago, hour_ago)
    set_event_times(bad, occurred_at="0001-01-01T00:00:00Z", received_at=timezone.now() - dt.timedelta(hours=1))
    counted = failures_counted("rollup")
    started = timezone.now()

    with caplog.at_level(logging.WARNING), pytest.raises(CommandError, match="failed for 1 tenant"):
        call_command("rollup", stdout=io.StringIO(), stderr=io.StringIO())

    assert requests_rolled_up(tenant_a) == 2  # the healthy tenant's days are built
    assert requests_rolled_up(tenant_b) == 1  # and the failing tenant's other days too
    failure = JobFailure.objects.get(job="rollup")
    assert failure.tenant_id == tenant_b.pk
    assert failure.attempts == 1 and failure.error.startswith("OverflowError")
    assert failure.next_retry_at > timezone.now()
    assert failures_counted("rollup") == counted + 1
    [line] = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "job.tenant_failed"]
    assert (line["job"], line["tenant_id"], line["error"]) == ("rollup", tenant_b.pk, "OverflowError")
    assert RollupCursor.objects.get(name=rollup.INCREMENTAL).received_from >= started  # the cursor moved on

    client.force_login(operator)
    page = client.get(reverse("ops-jobs"))
    assert page.status_code == 200
    [row] = page.context["failures"]
    assert (row.job, row.tenant_slug) == ("rollup", tenant_b.slug)
    assert tenant_b.slug in page.content.decode() and "OverflowError" in page.content.decode()

    # The next run, before the retry is due: new usage of both tenants rolls up, no new attempt.
    post(key_a, hour_ago)
    post(key_b, hour_ago)
    assert rollup_refresh_task.apply().get() >= 1
    assert (requests_rolled_up(tenant_a), requests_rolled_up(tenant_b)) == (3, 2)
    assert JobFailure.objects.get(job="rollup").attempts == 1

    # An operator repairs the row; the run after the retry is due rescans the tenant and clears it.
    set_event_times(bad, occurred_at=(hour_ago - dt.timedelta(days=2)).isoformat())
    rollup.rollup_refresh(now=timezone.now() + dt.timedelta(minutes=6))
    assert not JobFailure.objects.exists()
    assert requests_rolled_up(tenant_b) == 3
    assert failures_counted("rollup") == counted + 1


def test_a_failure_that_persists_is_retried_with_growing_backoff(key_a, key_b, tenant_b, hour_ago):
    tenant_b.timezone = "Asia/Shanghai"
    tenant_b.save(update_fields=["timezone"])
    [bad] = post(key_b, hour_ago)
    set_event_times(bad, occurred_at="0001-01-01T00:00:00Z", received_at=timezone.now() - dt.timedelta(hours=1))
    rollup.rollup_refresh()
    first = JobFailure.objects.get()

    rollup.rollup_refresh(now=first.next_retry_at + dt.timedelta(seconds=1))

    second = JobFailure.objects.get()
    assert second.attempts == 2 and second.first_seen == first.first_seen
    assert second.next_retry_at - second.last_seen == 2 * (first.next_retry_at - first.last_seen)


def test_retry_failed_retries_now(key_b, tenant_b, hour_ago):
    tenant_b.timezone = "Asia/Shanghai"
    tenant_b.save(update_fields=["timezone"])
    [bad] = post(key_b, hour_ago)
    set_event_times(bad, occurred_at="0001-01-01T00:00:00Z", received_at=timezone.now() - dt.timedelta(hours=1))
    with pytest.raises(CommandError):
        call_command("rollup", stdout=io.StringIO(), stderr=io.StringIO())
    set_event_times(bad, occurred_at=hour_ago.isoformat())

    call_command("rollup", stdout=io.StringIO())
    assert JobFailure.objects.exists()  # not due yet, and no longer in the incremental scan
    call_command("rollup", "--retry-failed", stdout=io.StringIO())

    assert not JobFailure.objects.exists()
    assert requests_rolled_up(tenant_b) == 1


def test_an_unknown_zone_stops_neither_finalize_nor_a_manual_day(key_a, key_b, tenant_a, tenant_b, hour_ago):
    post(key_a, hour_ago)
    post(key_b, hour_ago)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {type(tenant_b)._meta.db_table} SET timezone = 'Mars/Olympus' WHERE id = %s", [tenant_b.pk]
        )

    with pytest.raises(CommandError, match="failed for 1 tenant"):
        call_command("rollup", "--date", hour_ago.date().isoformat(), stdout=io.StringIO(), stderr=io.StringIO())
    assert requests_rolled_up(tenant_a) == 1
    rollup.rollup_finalize(now=dt.datetime.combine(hour_ago.date(), dt.time(1), tzinfo=dt.UTC) + dt.timedelta(days=1))
    assert JobFailure.objects.get().error.startswith("ZoneInfoNotFoundError")
