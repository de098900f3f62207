"""A Celery worker SIGKILLed mid-rollup, mid-close and mid-delivery, on a real broker (a
private Redis) and the test database.

Each task is made to block at a known point (a lock the test holds, a receiver that stalls),
the worker is killed with SIGKILL (no shutdown, nothing acknowledged), and a new worker (or the
pool's new child) runs the redelivered message: acks_late (+ reject_on_worker_lost for a lost
pool child) gives it back, and the claim-then-act services make the redo exactly once. The
worker launcher (tests/faults/worker.py) shortens the broker's visibility timeout and the
delivery lease to seconds.
"""

import datetime as dt
import os
import signal
import time

import pytest
from django.db.models import Count, Sum
from django.utils import timezone

from alerts.models import AlertDelivery
from alerts.services import notification_channel_create
from invoicing.models import Invoice, NumberSequence
from invoicing.services import invoices_close_month
from metering.models import DailyUsage, UsageEvent
from metering.services import rollup
from metering.services.ingest import usage_record_batch
from tests.faults.conftest import wait_for
from tests.faults.receiver import STALL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STARTUP = 90  # seconds for a worker to start and reach the blocking point on a busy machine


def _event(request_id: str, at: dt.datetime, **extra) -> dict:
    return {"request_id": request_id, "model": "gpt-4o", "input_tokens": 800, "output_tokens": 300,
            "timestamp": at.isoformat(), **extra}  # fmt: skip


def _daily(tenant) -> dict:
    rows = DailyUsage.objects.filter(tenant=tenant)
    return {(r.api_key_id, r.model, r.day): (r.requests, r.input_tokens, r.output_tokens, r.cost) for r in rows}


def _events(tenant, day) -> dict:
    rows = (
        UsageEvent.objects.filter(tenant=tenant)
        .values("api_key_id", "model")
        .annotate(n=Count("id"), i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost"))
    )
    return {(r["api_key_id"], r["model"], day): (r["n"], r["i"], r["o"], r["c"]) for r in rows}


def test_worker_killed_mid_rollup_the_redelivered_rebuild_equals_the_events(pg, celery_workers, tenant_a, key_a):
    day = timezone.now().date() - dt.timedelta(days=2)
    at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    events = [_event(f"w-roll-{i}", at, model="gpt-4o" if i % 2 else "gpt-4o-mini") for i in range(6)]
    assert usage_record_batch(raw_events=events, api_key=key_a.row).counts()["accepted"] == 6
    lock_key = (tenant_a.pk * 1_000_003 + day.toordinal()) % 2**31

    with pg.holding("SELECT pg_advisory_xact_lock(%s, %s)", [rollup._LOCK_TENANT_DAY, lock_key]):
        first = celery_workers.start()
        celery_workers.send("metering.tasks.rollup_day", day.isoformat())
        wait_for(lambda: pg.blocked_on("%pg_advisory_xact_lock%"), timeout=STARTUP, what=first.output)
        first.kill()
    assert not DailyUsage.objects.exists()

    second = celery_workers.start()
    wait_for(lambda: _daily(tenant_a), timeout=STARTUP, what=second.output)
    assert _daily(tenant_a) == _events(tenant_a, day)
    assert sum(requests for requests, *_ in _daily(tenant_a).values()) == 6


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_worker_killed_mid_close_issues_each_invoice_once(
    pool, pg, celery_workers, any_past_timestamp, tenant_a, tenant_b, key_a, key_b
):
    """solo: the whole worker is killed and a new one started; prefork: only the pool child
    running the close dies (the OOM killer's way) and the parent must hand the task back."""
    now = timezone.now()
    at = (now.replace(day=1) - dt.timedelta(days=1)).replace(day=10, hour=12)
    for key, prefix in ((key_a, "a"), (key_b, "b")):
        events = [_event(f"w-close-{prefix}-{i}", at) for i in range(3)]
        assert usage_record_batch(raw_events=events, api_key=key.row).counts()["accepted"] == 3
    NumberSequence.objects.get_or_create(kind=NumberSequence.Kind.INVOICE, year=now.year)
    counter = f"SELECT 1 FROM {NumberSequence._meta.db_table} WHERE kind = %s AND year = %s FOR UPDATE"
    env = {"INVOICE_GRACE_DAYS": "0", "INVOICE_SETTLE_SECONDS": "0"}
    if pool == "prefork":
        # The parent lives on and must hand the task back itself (reject_on_worker_lost); the
        # broker's own redelivery after its visibility timeout must not be what saves it.
        env["FAULTS_VISIBILITY_SECONDS"] = "600"

    with pg.holding(counter, [NumberSequence.Kind.INVOICE, now.year]):
        worker = celery_workers.start(pool=pool, **env)
        celery_workers.send("invoicing.tasks.invoices_close_due")
        wait_for(lambda: pg.blocked_on("%numbersequence%FOR UPDATE%"), timeout=STARTUP, what=worker.output)
        if pool == "solo":
            worker.kill()
        else:
            children = worker.children()
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)
    assert not Invoice.objects.exclude(status=Invoice.Status.DRAFT).exists()

    if pool == "solo":
        worker = celery_workers.start(pool=pool, **env)
    issued = Invoice.objects.filter(status=Invoice.Status.FINALIZED)
    wait_for(
        lambda: issued.count() == 2,
        timeout=30 if pool == "prefork" else STARTUP,
        what=worker.output,
    )
    time.sleep(1)  # a second run, if any, would have shown by now
    invoices = list(Invoice.objects.order_by("number"))
    assert [(i.tenant_id, i.status) for i in sorted(invoices, key=lambda i: i.tenant_id)] == [
        (tenant_a.pk, Invoice.Status.FINALIZED),
        (tenant_b.pk, Invoice.Status.FINALIZED),
    ]
    assert [i.number for i in invoices] == [f"INV-{now.year:04d}-000001", f"INV-{now.year:04d}-000002"]
    assert NumberSequence.objects.get(kind=NumberSequence.Kind.INVOICE, year=now.year).last_value == 2
    again = invoices_close_month(year=at.year, month=at.month, finalize=True, actor_label="test")
    assert sorted(r.outcome for r in again) == ["already issued", "already issued"]


def test_worker_killed_mid_delivery_sends_again_once_with_the_same_key(celery_workers, scripted_receiver, tenant_a):
    receiver = scripted_receiver()
    receiver.answers = [STALL]  # the first request hangs until the worker is dead
    channel = notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": receiver.url, "secret": "s" * 24}
    )
    delivery = AlertDelivery.objects.create(tenant=tenant_a, channel=channel)

    first = celery_workers.start()
    celery_workers.send("alerts.tasks.alert_delivery_send", delivery.pk)
    wait_for(receiver.received, timeout=STARTUP, what=first.output)
    first.kill()
    receiver.release()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (AlertDelivery.Status.SENDING, 1)  # claimed, lease running

    second = celery_workers.start()
    wait_for(
        lambda: AlertDelivery.objects.filter(pk=delivery.pk, status=AlertDelivery.Status.DELIVERED).exists(),
        timeout=STARTUP,
        what=second.output,
    )
    time.sleep(1)
    delivery.refresh_from_db()
    received = receiver.received()
    # Sent again after the crash (at least once), always under the same idempotency key, and
    # answered (processed) exactly once.
    assert len(received) == 2 and delivery.attempts == 2
    assert {r.delivery for r in received} == {received[0].delivery} and received[0].delivery
    assert receiver.delivered() == [received[0].delivery]
