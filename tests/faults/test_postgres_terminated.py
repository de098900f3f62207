"""A PostgreSQL backend terminated mid-transaction (pg_terminate_backend from a second
connection), during ingest, hold placement, settlement, rollup and the monthly close.

The window is deterministic: the test holds a lock the operation needs (the wallet row, the
tenant-day's advisory lock, the invoice number counter), waits until the operation's backend,
found by its application_name in pg_stat_activity, is blocked on it, and terminates exactly that
backend of the test database. Then the operation runs again: nothing lost, nothing doubled, and
Redis (the balance store) still equal to PostgreSQL.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import DatabaseError
from django.db.models import Count, Sum
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Hold, LedgerEntry, Wallet
from billing.money import round_to_ledger
from billing.selectors import ledger_sum
from billing.services.reconcile import balances_reconcile
from invoicing.models import Invoice, NumberSequence
from invoicing.services import invoices_close_month
from metering.models import DailyUsage, UsageEvent
from metering.services import rollup
from metering.services.ingest import usage_record_batch
from tests import factories
from tests.faults.conftest import run_in_thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WALLET_ROW = "SELECT 1 FROM billing_wallet WHERE tenant_id = %s FOR UPDATE"
JOIN = 30  # seconds: every wait is bounded


def _terminate_when_blocked(pg, thread, outcome, name: str) -> Exception:
    pid = pg.wait_blocked(name)
    pg.terminate(pid)
    thread.join(timeout=JOIN)
    assert not thread.is_alive(), f"{name} hung after its backend was terminated"
    assert "error" in outcome, f"{name} finished although its backend was terminated: {outcome}"
    return outcome["error"]


def _answered_database_unavailable(pg, thread, outcome, name: str) -> None:
    """An API request whose backend is terminated fails: 503 database_unavailable (the API's
    handler for a lost database), or the database error itself where no handler answers it."""
    pid = pg.wait_blocked(name)
    pg.terminate(pid)
    thread.join(timeout=JOIN)
    assert not thread.is_alive(), f"{name} hung after its backend was terminated"
    if "error" in outcome:
        assert isinstance(outcome["error"], DatabaseError), repr(outcome["error"])
        return
    answer = outcome["result"]
    assert answer.status_code == 503, answer.content
    assert answer.json()["error"]["code"] == "database_unavailable"


def _assert_money_is_the_truth(tenant) -> None:
    assert Wallet.objects.get(tenant=tenant).balance == ledger_sum(tenant_id=tenant.pk)
    keys = list(LedgerEntry.objects.filter(tenant=tenant).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys)), "ledger idempotency keys are unique"
    report = balances_reconcile(tenant_id=tenant.pk, fix=False)
    assert report.clean, (report.wallets, report.drifts)  # the mirror was taken back out of Redis


def _event(request_id: str, **extra) -> dict:
    return {"request_id": request_id, "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200, **extra}


def test_ingest_terminated_before_commit_is_rolled_back_and_retried_once(pg, redis_backend, tenant_a, key_a):
    factories.topup(tenant_a, "1.00")
    events = [_event(f"ing-{i}") for i in range(5)]
    with pg.holding(WALLET_ROW, [tenant_a.pk]):
        thread, outcome = run_in_thread(
            lambda: usage_record_batch(raw_events=events, api_key=key_a.row), name="victim-ingest"
        )
        error = _terminate_when_blocked(pg, thread, outcome, "victim-ingest")
    assert isinstance(error, DatabaseError), repr(error)
    assert not UsageEvent.objects.filter(tenant=tenant_a).exists()
    _assert_money_is_the_truth(tenant_a)

    again = usage_record_batch(raw_events=events, api_key=key_a.row)
    assert again.counts() == {"accepted": 5, "duplicate": 0, "rejected": 0}
    assert usage_record_batch(raw_events=events, api_key=key_a.row).counts()["duplicate"] == 5
    stored = UsageEvent.objects.filter(tenant=tenant_a)
    assert stored.count() == 5
    cost = stored.aggregate(s=Sum("cost"))["s"]
    usage = LedgerEntry.objects.filter(tenant=tenant_a, kind="usage")
    assert [u.amount for u in usage] == [-round_to_ledger(cost)]
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("1.00") - round_to_ledger(cost)
    _assert_money_is_the_truth(tenant_a)


def _hold_body(request_id: str) -> dict:
    return {
        "model": "gpt-4o",
        "estimated_input_tokens": 1000,
        "max_output_tokens": 500,
        "request_id": request_id,
        "hold": True,
    }


def _authorize(secret: str, body: dict):
    client = APIClient(raise_request_exception=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client.post("/api/v1/authorize", body, format="json")


def test_hold_placement_terminated_reserves_nothing_and_is_placed_once_on_retry(pg, redis_backend, tenant_a, key_a):
    factories.topup(tenant_a, "1.00")
    body = _hold_body("hold-1")
    with pg.holding(WALLET_ROW, [tenant_a.pk]):
        thread, outcome = run_in_thread(lambda: _authorize(key_a.secret, body), name="victim-hold")
        _answered_database_unavailable(pg, thread, outcome, "victim-hold")
    assert not Hold.objects.filter(tenant=tenant_a).exists()
    _assert_money_is_the_truth(tenant_a)  # the reservation in Redis was undone

    answer = key_a.post("/api/v1/authorize", body)
    assert answer.status_code == 200, answer.content
    repeat = key_a.post("/api/v1/authorize", body)
    assert repeat.status_code == 200
    assert repeat.json()["hold"] == {**answer.json()["hold"], "created": False}  # the same hold, not a second
    assert Hold.objects.filter(tenant=tenant_a).count() == 1
    assert LedgerEntry.objects.filter(tenant=tenant_a, kind="hold").count() == 1
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("1.00") - Decimal("0.0075")
    _assert_money_is_the_truth(tenant_a)


def test_settlement_terminated_keeps_the_hold_open_and_settles_it_once(pg, redis_backend, tenant_a, key_a):
    factories.topup(tenant_a, "1.00")
    assert key_a.post("/api/v1/authorize", _hold_body("settle-1")).status_code == 200
    event = _event("settle-1")
    with pg.holding(WALLET_ROW, [tenant_a.pk]):
        thread, outcome = run_in_thread(
            lambda: usage_record_batch(raw_events=[event], api_key=key_a.row), name="victim-settle"
        )
        error = _terminate_when_blocked(pg, thread, outcome, "victim-settle")
    assert isinstance(error, DatabaseError), repr(error)
    assert Hold.objects.get(tenant=tenant_a).status == Hold.Status.OPEN
    assert not UsageEvent.objects.filter(tenant=tenant_a).exists()
    _assert_money_is_the_truth(tenant_a)

    stored = key_a.post("/api/v1/events", event)
    assert stored.status_code == 201, stored.content
    assert key_a.post("/api/v1/events", event).status_code == 200
    hold = Hold.objects.get(tenant=tenant_a)
    cost = round_to_ledger(Decimal(stored.json()["cost"]))
    assert hold.status == Hold.Status.SETTLED and hold.settled_amount == cost
    assert LedgerEntry.objects.filter(tenant=tenant_a, kind="release").count() == 1
    assert [u.amount for u in LedgerEntry.objects.filter(tenant=tenant_a, kind="usage")] == [-cost]
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("1.00") - cost
    _assert_money_is_the_truth(tenant_a)


def _events_by_day(tenant) -> dict:
    rows = (
        UsageEvent.objects.filter(tenant=tenant)
        .values("api_key_id", "model")
        .annotate(n=Count("id"), i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost"))
    )
    return {(r["api_key_id"], r["model"]): (r["n"], r["i"], r["o"], r["c"]) for r in rows}


def _rollup_by_day(tenant, day) -> dict:
    rows = DailyUsage.objects.filter(tenant=tenant, day=day)
    return {(r.api_key_id, r.model): (r.requests, r.input_tokens, r.output_tokens, r.cost) for r in rows}


def test_rollup_terminated_mid_rebuild_leaves_the_old_rows_and_reruns_exactly(pg, tenant_a, key_a):
    day = timezone.localdate(timezone.now(), timezone=dt.UTC) - dt.timedelta(days=2)
    at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    first = [_event(f"roll-{i}", timestamp=at.isoformat()) for i in range(4)]
    assert usage_record_batch(raw_events=first, api_key=key_a.row).counts()["accepted"] == 4
    rollup.rollup_day(day=day)
    before = _rollup_by_day(tenant_a, day)
    later = [_event(f"roll-late-{i}", timestamp=at.isoformat(), model="gpt-4o-mini") for i in range(3)]
    assert usage_record_batch(raw_events=later, api_key=key_a.row).counts()["accepted"] == 3

    lock_key = (tenant_a.pk * 1_000_003 + day.toordinal()) % 2**31
    with pg.holding("SELECT pg_advisory_xact_lock(%s, %s)", [rollup._LOCK_TENANT_DAY, lock_key]):
        thread, outcome = run_in_thread(lambda: rollup.rollup_day(day=day), name="victim-rollup")
        error = _terminate_when_blocked(pg, thread, outcome, "victim-rollup")
    assert isinstance(error, DatabaseError), repr(error)
    assert _rollup_by_day(tenant_a, day) == before  # rolled back whole: the last good rollup stands

    rollup.rollup_day(day=day)
    rollup.rollup_day(day=day)
    assert _rollup_by_day(tenant_a, day) == _events_by_day(tenant_a)
    assert sum(n for n, *_ in _rollup_by_day(tenant_a, day).values()) == 7


def test_monthly_close_terminated_mid_finalize_issues_each_invoice_once(
    pg, settings, any_past_timestamp, tenant_a, tenant_b, key_a, key_b
):
    settings.INVOICE_SETTLE_SECONDS = 0
    now = timezone.now()
    last_month = (now.replace(day=1) - dt.timedelta(days=1)).replace(day=10, hour=12)
    year, month = last_month.year, last_month.month
    for key, prefix in ((key_a, "a"), (key_b, "b")):
        events = [_event(f"close-{prefix}-{i}", timestamp=last_month.isoformat()) for i in range(3)]
        assert usage_record_batch(raw_events=events, api_key=key.row).counts()["accepted"] == 3
    NumberSequence.objects.get_or_create(kind=NumberSequence.Kind.INVOICE, year=now.year)
    counter = f"SELECT 1 FROM {NumberSequence._meta.db_table} WHERE kind = %s AND year = %s FOR UPDATE"

    with pg.holding(counter, [NumberSequence.Kind.INVOICE, now.year]):
        thread, outcome = run_in_thread(
            lambda: invoices_close_month(year=year, month=month, finalize=True, actor_label="test"),
            name="victim-close",
        )
        error = _terminate_when_blocked(pg, thread, outcome, "victim-close")
    assert isinstance(error, DatabaseError), repr(error)
    assert not Invoice.objects.exclude(status=Invoice.Status.DRAFT).exists()  # the finalize rolled back
    assert NumberSequence.objects.get(kind=NumberSequence.Kind.INVOICE, year=now.year).last_value == 0

    results = invoices_close_month(year=year, month=month, finalize=True, actor_label="test")
    assert sorted(r.outcome for r in results) == ["finalized", "finalized"]
    again = invoices_close_month(year=year, month=month, finalize=True, actor_label="test")
    assert sorted(r.outcome for r in again) == ["already issued", "already issued"]
    invoices = list(Invoice.objects.order_by("number"))
    assert len(invoices) == 2 and {i.tenant_id for i in invoices} == {tenant_a.pk, tenant_b.pk}
    assert [i.number for i in invoices] == [f"INV-{now.year:04d}-000001", f"INV-{now.year:04d}-000002"]
    assert NumberSequence.objects.get(kind=NumberSequence.Kind.INVOICE, year=now.year).last_value == 2
    for invoice in invoices:  # each month's usage billed once: every token on exactly one line
        used = UsageEvent.objects.filter(tenant_id=invoice.tenant_id).aggregate(
            n=Count("id"), t=Sum("input_tokens") + Sum("output_tokens"), c=Sum("cost")
        )
        lines = invoice.lines.aggregate(q=Sum("quantity"), u=Sum("amount_unrounded"), a=Sum("amount"))
        assert lines["q"] == used["t"] == 3 * 1200
        assert lines["u"] == used["c"]
        assert invoice.subtotal == lines["a"] > 0
