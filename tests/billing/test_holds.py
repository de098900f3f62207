"""Holds resolve exactly once: settled by their usage event or released at expiry, never both.

Also the Redis side of it: seeding after a lost Redis, the reconciler finding and fixing drift.
Every test runs on both balance backends unless it is about Redis itself.
"""

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from billing.models import Hold, LedgerEntry, Wallet
from billing.selectors import ledger_sum, quota_usage
from billing.services.balances.keys import balance_key
from billing.services.holds import holds_release_expired
from billing.services.quotas import quota_create
from billing.services.reconcile import balances_reconcile
from tests import factories

pytestmark = pytest.mark.django_db

ESTIMATE = Decimal("0.0075")  # gpt-4o, 1000 in + 500 out


def hold(cred, request_id: str, **overrides):
    body = {
        "model": "gpt-4o",
        "estimated_input_tokens": 1000,
        "max_output_tokens": 500,
        "hold": True,
        "request_id": request_id,
    }
    response = cred.post("/api/v1/authorize", {**body, **overrides})
    assert response.status_code == 200, response.content
    return response.json()


def event(cred, request_id: str, input_tokens: int = 1000, output_tokens: int = 500):
    response = cred.post(
        "/api/v1/events",
        {"request_id": request_id, "model": "gpt-4o", "input_tokens": input_tokens, "output_tokens": output_tokens},
    )
    assert response.status_code in (200, 201), response.content
    return response.json()


def assert_books_balance(tenant, backend: str) -> Decimal:
    balance = Wallet.objects.get(tenant=tenant).balance
    assert balance == ledger_sum(tenant_id=tenant.pk)
    if backend == "redis":
        report = balances_reconcile(tenant_id=tenant.pk, fix=False)
        assert report.clean, (report.wallets, report.drifts)
    return balance


def expire_all() -> None:
    Hold.objects.filter(status="open").update(expires_at=timezone.now() - dt.timedelta(seconds=1))


def test_settle_below_the_hold(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "below")
    event(key_a, "below", input_tokens=100, output_tokens=10)  # 0.00025 + 0.0001
    row = Hold.objects.get()
    assert (row.status, row.settled_amount, row.overage) == ("settled", Decimal("0.00035"), 0)
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00") - Decimal("0.00035")


def test_settle_above_the_hold_is_charged_in_full_and_recorded(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "above")
    event(key_a, "above", input_tokens=3000, output_tokens=500)  # 0.0075 + 0.005 = 0.0125
    row = Hold.objects.get()
    assert row.settled_amount == Decimal("0.0125") and row.overage == Decimal("0.005")
    release = LedgerEntry.objects.get(kind="release")
    assert release.metadata == {"hold_id": row.pk, "settled": "0.012500", "overage": "0.005000"}
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00") - Decimal("0.0125")


def test_overage_can_take_the_balance_below_zero_then_authorize_refuses(backend, key_a, tenant_a):
    factories.topup(tenant_a, "0.0075")
    hold(key_a, "big")
    event(key_a, "big", input_tokens=4000, output_tokens=500)  # 0.015: the estimate was wrong
    assert assert_books_balance(tenant_a, backend) == Decimal("-0.0075")
    response = key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 0, "max_output_tokens": 0})
    assert response.status_code == 402
    assert response.json()["error"]["details"]["remaining"] == "0.00"


def test_duplicate_settle_changes_nothing(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "dup")
    first = event(key_a, "dup")
    second = event(key_a, "dup")
    assert second["duplicate"] is True and second["id"] == first["id"]
    batch = key_a.post(
        "/api/v1/events/batch",
        {"events": [{"request_id": "dup", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500}]},
    )
    assert batch.json()["duplicates"] == 1
    assert LedgerEntry.objects.filter(kind="release").count() == 1
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00") - ESTIMATE


def test_expired_hold_is_released_once(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "gone")
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("1.00") - ESTIMATE
    assert holds_release_expired().released == 0  # not expired yet
    expire_all()
    result = holds_release_expired()
    assert (result.released, result.amount, result.tenants) == (1, ESTIMATE, 1)
    assert holds_release_expired().released == 0
    row = Hold.objects.get()
    assert row.status == "released" and row.closed_at is not None and row.settled_amount is None
    assert LedgerEntry.objects.get(kind="release").idempotency_key == f"release:{row.pk}"
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00")


def test_settle_after_expiry_charges_the_usage_once(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "late")
    expire_all()
    holds_release_expired()
    event(key_a, "late", input_tokens=100, output_tokens=10)
    row = Hold.objects.get()
    assert row.status == "released" and row.settled_amount is None  # not settled a second time
    assert LedgerEntry.objects.filter(kind="release").count() == 1
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00") - Decimal("0.00035")


def test_expired_but_not_yet_swept_hold_is_settled_by_its_event(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "slow")
    expire_all()
    event(key_a, "slow")
    assert holds_release_expired().released == 0
    assert Hold.objects.get().status == "settled"
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00") - ESTIMATE


def test_release_gives_back_the_quota_reservation(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    quota_create(tenant=tenant_a, metric="tokens", window="day", limit=Decimal(2000), actor_label="t")
    hold(key_a, "q")
    [before] = quota_usage(tenant_id=tenant_a.pk)
    assert (before.used, before.held, before.remaining) == (0, 1500, 500)
    expire_all()
    holds_release_expired()
    [after] = quota_usage(tenant_id=tenant_a.pk)
    assert (after.used, after.held, after.remaining) == (0, 0, 2000)
    hold(key_a, "q2")  # admissible again
    assert_books_balance(tenant_a, backend)


def test_release_expired_holds_command(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "a")
    hold(key_a, "b")
    expire_all()
    out = StringIO()
    call_command("release_expired_holds", stdout=out)
    assert "Released 2 expired hold(s) of 1 tenant(s)" in out.getvalue()
    with pytest.raises(CommandError, match="batch-size"):
        call_command("release_expired_holds", "--batch-size", "0")


def test_release_in_small_batches(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    for n in range(5):
        hold(key_a, f"h{n}")
    expire_all()
    assert holds_release_expired(batch_size=2).released == 5
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00")


def test_batch_settles_several_holds_and_plain_events(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    for request_id in ("h1", "h2", "h3"):
        hold(key_a, request_id)
    events = [
        {"request_id": rid, "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}
        for rid in ("h1", "h2", "h3", "plain-1", "plain-2")
    ]
    response = key_a.post("/api/v1/events/batch", {"events": events})
    assert response.json()["accepted"] == 5
    assert set(Hold.objects.values_list("status", flat=True)) == {"settled"}
    assert LedgerEntry.objects.filter(kind="usage").count() == 1  # one charge for the batch
    assert LedgerEntry.objects.filter(kind="release").count() == 3
    cost = 5 * Decimal("0.0035")
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00") - cost


# --- Redis: seeding, loss, drift -------------------------------------------------------------------


def test_lost_redis_is_seeded_from_postgres_not_zero(redis_backend, redis_client, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    quota_create(tenant=tenant_a, metric="money", window="month", limit=Decimal("0.02"), actor_label="t")
    hold(key_a, "open-1")
    event(key_a, "spent", input_tokens=1000, output_tokens=0)  # 0.0025, no hold
    redis_client.flushdb()
    response = key_a.post(
        "/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["balance"] == "0.99"  # 1.00 - 0.0075 held - 0.0025 spent
    [quota] = body["quotas"]
    assert (quota["used"], quota["held"], quota["remaining"]) == ("0.002500", "0.007500", "0.010000")
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 990_000
    assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean
    # a third hold would pass the balance but not the money quota (0.0025 + 0.0075 + 0.0075 + 0.0075 > 0.02)
    hold(key_a, "open-2")
    assert (
        key_a.post(
            "/api/v1/authorize",
            {
                "model": "gpt-4o",
                "estimated_input_tokens": 1000,
                "max_output_tokens": 500,
                "hold": True,
                "request_id": "x",
            },
        ).status_code
        == 402
    )


def test_hold_retried_after_redis_lost_is_still_one_hold(redis_backend, redis_client, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    first = hold(key_a, "retry")
    redis_client.flushdb()  # the hold key is gone; PostgreSQL still has the hold
    second = hold(key_a, "retry")
    assert second["hold_id"] == first["hold_id"] and second["hold"]["created"] is False
    assert Hold.objects.count() == 1
    assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("1.00") - ESTIMATE


def test_settlement_with_cold_redis_leaves_keys_absent(redis_backend, redis_client, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    hold(key_a, "cold")
    redis_client.flushdb()
    event(key_a, "cold")  # mirrors nothing: absent keys are never created by INCR
    assert redis_client.get(balance_key(tenant_a.pk)) is None
    # No key of the tenant's (its hash tag) came back; the ingest ceiling's counter is the caller's.
    assert [k for k in redis_client.scan_iter() if f"{{{tenant_a.pk}}}" in k] == []
    assert all(k.startswith("ceiling:") for k in redis_client.scan_iter())
    hold(key_a, "warm")  # seeds from PostgreSQL
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 1_000_000 - 2 * 7500
    assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean


def test_reconciler_reports_and_fixes_drift(redis_backend, redis_client, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    quota_create(tenant=tenant_a, metric="tokens", window="day", limit=Decimal(10_000), actor_label="t")
    hold(key_a, "r1")
    key = balance_key(tenant_a.pk)
    cell = next(k for k in redis_client.smembers(f"qk:{{{tenant_a.pk}}}"))
    redis_client.set(key, 5_000_000)  # someone INCRed it, or a commit was lost
    redis_client.hset(cell, "ht", 0)

    out = StringIO()
    with pytest.raises(CommandError, match="2 drift"):
        call_command("reconcile", "--check", stdout=out)
    assert f"{key} cached 5000000, expected 992500" in out.getvalue()
    assert int(redis_client.get(key)) == 5_000_000  # --check changes nothing

    out = StringIO()
    call_command("reconcile", "--tenant", "acme", stdout=out)
    assert "2 drift(s), fixed." in out.getvalue()
    assert int(redis_client.get(key)) == 992_500
    assert redis_client.hget(cell, "ht") == "1500"
    out = StringIO()
    call_command("reconcile", stdout=out)
    assert "0 drift(s)." in out.getvalue()


def test_reconciler_fixes_a_wallet_that_left_the_ledger(backend, tenant_a):
    factories.topup(tenant_a, "1.00")
    Wallet.objects.filter(tenant=tenant_a).update(balance=Decimal("7"))
    report = balances_reconcile(fix=True)
    assert [(w.wallet, w.ledger) for w in report.wallets] == [(Decimal("7"), Decimal("1"))]
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("1.00")
    assert balances_reconcile(fix=False).clean


def test_reconcile_command_errors(backend, db):
    with pytest.raises(CommandError, match="No tenant"):
        call_command("reconcile", "--tenant", "nope")


def test_redis_down_is_a_clear_503(settings, key_a, tenant_a):
    settings.BALANCE_BACKEND = "redis"
    settings.REDIS_URL = "redis://127.0.0.1:1/11"  # nothing listens there
    settings.BALANCE_REDIS_TIMEOUT = 0.2
    settings.AUTHORIZE_CACHE_SECONDS = 0
    response = key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 1, "max_output_tokens": 1})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "balance_unavailable"


def test_postgres_refuses_what_a_drifted_cache_admits(redis_backend, redis_client, key_a, tenant_a):
    """The wallet UPDATE is conditional in the Redis backend too: PostgreSQL has the last word."""
    factories.topup(tenant_a, "0.005")
    key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 1, "max_output_tokens": 1})
    redis_client.set(balance_key(tenant_a.pk), 5_000_000)  # drifted far above the ledger
    response = key_a.post(
        "/api/v1/authorize",
        {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500, "hold": True, "request_id": "d"},
    )
    assert response.status_code == 402
    assert response.json()["error"]["details"]["balance"] == "0.005"
    assert not Hold.objects.exists() and not LedgerEntry.objects.filter(kind="hold").exists()
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 5_000_000  # the reservation was undone
    assert not redis_client.exists(f"hold:{{{tenant_a.pk}}}:d")
    balances_reconcile(tenant_id=tenant_a.pk, fix=True)
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 5000


def test_holds_without_waiting_for_the_wal_flush(backend, settings, key_a, tenant_a):
    settings.HOLD_SYNCHRONOUS_COMMIT = False
    factories.topup(tenant_a, "1.00")
    hold(key_a, "nf")
    event(key_a, "nf", input_tokens=100, output_tokens=10)
    assert Hold.objects.get().status == "settled"
    assert assert_books_balance(tenant_a, backend) == Decimal("1.00") - Decimal("0.00035")
