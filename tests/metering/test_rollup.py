"""Daily rollups: sum(DailyUsage) == sum(UsageEvent) per tenant-local day, idempotently.

Events go in through the ingest API; the rollup runs through its command, service and task
entry points; expectations are computed here from the stored events, independently.
"""

import datetime as dt
import io
import threading
import zoneinfo
from collections import defaultdict
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from metering import selectors
from metering.models import DailyUsage, UsageEvent
from metering.services import rollup
from metering.tasks import rollup_refresh as rollup_refresh_task
from tests import factories

FIGURES = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cost")


def post_events(credential, events):
    response = credential.post("/api/v1/events/batch", {"events": events})
    assert response.status_code == 200, response.content
    assert response.json()["rejected"] == 0, response.json()
    return response.json()


def at(moment: dt.datetime, **body):
    return factories.EventBodyFactory(timestamp=moment.isoformat(), **body)


def expected_rows() -> dict:
    """Group the stored events by tenant x key x model x tenant-local day, in Python."""
    zones = {}
    rows: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(FIGURES, 0) | {"cost": Decimal(0), "unpriced": 0})
    for event in UsageEvent.objects.select_related("tenant"):
        zone = zones.setdefault(event.tenant_id, zoneinfo.ZoneInfo(event.tenant.timezone))
        row = rows[(event.tenant_id, event.api_key_id, event.model, event.occurred_at.astimezone(zone).date())]
        row["requests"] += 1
        row["input_tokens"] += event.input_tokens
        row["output_tokens"] += event.output_tokens
        row["cached_input_tokens"] += event.cached_input_tokens
        row["cache_write_tokens"] += event.cache_write_tokens
        if event.cost is None:
            row["unpriced"] += 1
        else:
            row["cost"] += event.cost
    return dict(rows)


def actual_rows() -> dict:
    return {
        (row.tenant_id, row.api_key_id, row.model, row.day): {name: getattr(row, name) for name in FIGURES}
        | {"unpriced": row.unpriced_requests}
        for row in DailyUsage.objects.all()
    }


def snapshot() -> list[tuple]:
    return list(
        DailyUsage.objects.order_by("tenant_id", "api_key_id", "model", "day").values_list(
            "id", "tenant_id", "api_key_id", "model", "day", *FIGURES, "unpriced_requests", "updated_at"
        )
    )


@pytest.fixture
def base() -> dt.datetime:
    """UTC midnight two days ago: every offset below stays in the past."""
    now = timezone.now()
    return dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC) - dt.timedelta(days=2)


@pytest.fixture
def usage(key_a, key_b, base):
    """UTC tenant acme and Asia/Shanghai tenant globex, around UTC and Shanghai midnights."""
    post_events(
        key_a,
        [
            at(base + dt.timedelta(hours=1)),
            at(base + dt.timedelta(hours=23, minutes=59), model="gpt-4o-mini"),
            at(base + dt.timedelta(hours=24, minutes=1), cached_input_tokens=200),
            at(base + dt.timedelta(hours=25), model="mystery-model"),  # unpriced, still counted
        ],
    )
    post_events(
        key_b,
        [
            at(base + dt.timedelta(hours=15, minutes=30)),  # Shanghai 23:30 on day 0
            at(base + dt.timedelta(hours=16, minutes=30)),  # Shanghai 00:30 on day 1
            at(base + dt.timedelta(hours=23, minutes=30)),  # Shanghai 07:30 on day 1 (UTC day 0)
            at(base + dt.timedelta(hours=24, minutes=30)),  # Shanghai 08:30 on day 1 (UTC day 1)
        ],
    )


def test_rollup_matches_events_for_each_tenant_local_day(usage, tenant_b, base):
    call_command("rollup", stdout=io.StringIO())

    assert actual_rows() == expected_rows()
    shanghai_days = sorted({day for (tenant, _, _, day) in actual_rows() if tenant == tenant_b.pk})
    assert shanghai_days == [base.date(), base.date() + dt.timedelta(days=1)]
    day1 = DailyUsage.objects.get(tenant=tenant_b, day=base.date() + dt.timedelta(days=1))
    assert day1.requests == 3  # straddles UTC midnight: two UTC days, one Shanghai day


def test_unpriced_events_are_counted_with_zero_cost(usage, tenant_a):
    call_command("rollup", stdout=io.StringIO())
    row = DailyUsage.objects.get(tenant=tenant_a, model="mystery-model")
    assert (row.requests, row.unpriced_requests, row.cost) == (1, 1, Decimal(0))


def test_late_events_are_folded_into_their_day(usage, key_a, key_b, base):
    call_command("rollup", stdout=io.StringIO())
    late_day = base - dt.timedelta(days=3)
    post_events(key_a, [at(late_day + dt.timedelta(hours=5)), at(base + dt.timedelta(hours=2))])
    post_events(key_b, [at(late_day + dt.timedelta(hours=20))])  # Shanghai: the next local day

    out = io.StringIO()
    call_command("rollup", stdout=out)

    assert actual_rows() == expected_rows()
    assert "Rolled up" in out.getvalue()
    assert DailyUsage.objects.filter(day=late_day.date()).exists()


def test_rebuilding_gives_identical_rows_and_rewrites_nothing(usage, tenant_a, base):
    call_command("rollup", stdout=io.StringIO())
    before = snapshot()

    call_command("rollup", "--all", stdout=io.StringIO())
    call_command("rollup", "--date", base.date().isoformat(), stdout=io.StringIO())
    call_command("rollup", "--tenant", tenant_a.slug, stdout=io.StringIO())
    rollup.rollup_refresh(now=timezone.now())

    assert snapshot() == before  # same ids, same figures, not even updated_at moved


def test_a_row_whose_events_are_gone_is_removed(usage, tenant_a, base):
    call_command("rollup", stdout=io.StringIO())
    UsageEvent.objects.filter(tenant=tenant_a, model="mystery-model").delete()  # e.g. a detached partition

    call_command("rollup", "--tenant", tenant_a.slug, stdout=io.StringIO())

    assert actual_rows() == expected_rows()
    assert not DailyUsage.objects.filter(model="mystery-model").exists()


def test_the_refresh_task_folds_in_what_arrived(usage):
    assert rollup_refresh_task.apply().get() >= 1
    assert actual_rows() == expected_rows()


def test_finalize_rebuilds_yesterday_just_after_local_midnight(usage, tenant_a, tenant_b, base):
    shanghai = zoneinfo.ZoneInfo("Asia/Shanghai")
    local_one_am = dt.datetime.combine(base.date() + dt.timedelta(days=2), dt.time(1), tzinfo=shanghai)

    results = rollup.rollup_finalize(now=local_one_am)  # UTC 17:00: acme's midnight is hours away

    assert [(result.day, result.tenants) for result in results] == [(base.date() + dt.timedelta(days=1), 1)]
    assert set(DailyUsage.objects.values_list("tenant_id", flat=True)) == {tenant_b.pk}


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_give_identical_rows(key_a, key_b, base):
    # Enough events that the two rebuilds really overlap.
    for credential in (key_a, key_b):
        for chunk in range(3):
            post_events(
                credential,
                [
                    at(base + dt.timedelta(minutes=7 * i + chunk), model=("gpt-4o", "gpt-4o-mini")[i % 2])
                    for i in range(300)
                ],
            )
    days = sorted({day for (_, _, _, day) in expected_rows()})
    errors = []

    def worker(barrier: threading.Barrier) -> None:
        try:
            barrier.wait()
            for day in days:
                rollup.rollup_day(day=day)
            rollup.rollup_refresh()
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    for _ in range(3):
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=worker, args=(barrier,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert actual_rows() == expected_rows()
    first = snapshot()
    rollup.rollup_refresh()
    assert snapshot() == first


@pytest.mark.django_db(transaction=True)
def test_rollup_racing_ingest_converges(key_a, base):
    """A rebuild running while events arrive misses nothing: the next refresh folds them in."""
    stop = threading.Event()
    errors = []

    def rebuild() -> None:
        try:
            while not stop.is_set():
                rollup.rollup_refresh()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=rebuild)
    thread.start()
    try:
        for chunk in range(5):
            post_events(key_a, [at(base + dt.timedelta(minutes=i, seconds=chunk)) for i in range(100)])
    finally:
        stop.set()
        thread.join()
    assert errors == []
    rollup.rollup_refresh()
    assert actual_rows() == expected_rows()
    assert sum(row["requests"] for row in actual_rows().values()) == 500


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "2026-13-01"], "YYYY-MM-DD"),
        (["--tenant", "nobody"], "No tenant"),
        (["--all", "--date", "2026-01-01"], "--all"),
    ],
)
def test_command_rejects_bad_input(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("rollup", *args, stdout=io.StringIO())


def test_command_prints_progress(usage, base):
    out = io.StringIO()
    call_command("rollup", "--date", base.date().isoformat(), stdout=out)
    assert base.date().isoformat() in out.getvalue()
    assert "rows" in out.getvalue()


# --- Selectors that read the rollup ---------------------------------------------------------


def test_usage_so_far_adds_the_rollup_and_todays_events(key_a, tenant_a):
    now = timezone.now()
    today = now.date()
    post_events(key_a, [at(now - dt.timedelta(days=2)), at(now - dt.timedelta(days=1))])
    rollup.rollup_refresh()
    post_events(key_a, [at(timezone.now())])  # today, not rolled up yet

    totals = selectors.usage_so_far(tenant_id=tenant_a.pk, tz_name="UTC", start_day=None, now=timezone.now())
    since_yesterday = selectors.usage_so_far(
        tenant_id=tenant_a.pk, tz_name="UTC", start_day=today - dt.timedelta(days=1), now=timezone.now()
    )
    per_day = selectors.usage_per_day(tenant_id=tenant_a.pk, start_day=today - dt.timedelta(days=7), end_day=today)

    assert totals["requests"] == 3
    assert totals["tokens"] == 3 * 1500
    assert since_yesterday["requests"] == 2
    assert sorted(per_day) == [today - dt.timedelta(days=2), today - dt.timedelta(days=1)]
