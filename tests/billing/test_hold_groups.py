"""Holds placed in groups (metering.services.authorize.authorize_holds, the relay's admitter):
the same decisions, rows and entries as one hold at a time, and one commit for the group.

Run on every balance backend; the cases where Redis and PostgreSQL disagree (a hold key lost,
a cached balance above the ledger) on the Redis flavours, where only they can happen.
"""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connections, transaction

from billing.models import Hold, LedgerEntry, Wallet
from billing.selectors import ledger_sum, quota_usage
from billing.services.balances.keys import balance_key, hold_key
from billing.services.quotas import quota_create
from metering.services.authorize import AuthorizeRefused, AuthorizeResult, authorize_holds, authorize_prepare
from tests import factories
from tests.billing.test_holds import assert_books_balance

ESTIMATE = Decimal("0.0075")  # gpt-4o, 1000 in + 500 out


def prepared(key, request_id: str):
    return authorize_prepare(
        api_key=key, model="gpt-4o", estimated_input_tokens=1000, max_output_tokens=500, request_id=request_id,
        hold=True,
    )  # fmt: skip


@pytest.mark.django_db
def test_a_group_admits_in_order_until_the_money_runs_out(backend, key_a, tenant_a):
    factories.topup(tenant_a, str(ESTIMATE * 3))
    answers = authorize_holds([prepared(key_a.row, f"g-{i}") for i in range(5)])

    assert [type(a) for a in answers] == [AuthorizeResult] * 3 + [AuthorizeRefused] * 2
    assert [a.balance for a in answers[:3]] == [ESTIMATE * 2, ESTIMATE, 0]
    assert all(a.status == 402 and a.code == "insufficient_balance" for a in answers[3:])
    assert {h.request_id for h in Hold.objects.filter(status="open")} == {"g-0", "g-1", "g-2"}
    assert [a.hold.id for a in answers[:3]] == [Hold.objects.get(request_id=f"g-{i}").pk for i in range(3)]
    entries = LedgerEntry.objects.filter(kind="hold").order_by("reference")
    assert [(e.reference, e.amount, e.idempotency_key) for e in entries] == [
        (f"g-{i}", -ESTIMATE, f"hold:{answers[i].hold.id}") for i in range(3)
    ]
    assert entries[0].metadata == {"model": "gpt-4o", "tokens": 1500}
    assert assert_books_balance(tenant_a, backend) == 0


@pytest.mark.django_db
def test_a_group_reserves_quota_cells_and_stops_at_a_hard_quota(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10")
    quota_create(tenant=tenant_a, metric="tokens", window="day", limit=Decimal(4000), enforcement="hard")
    answers = authorize_holds([prepared(key_a.row, f"q-{i}") for i in range(4)])

    assert [isinstance(a, AuthorizeResult) for a in answers] == [True, True, False, False]
    assert answers[2].code == "quota_exceeded"
    (usage,) = quota_usage(tenant_id=tenant_a.pk)
    assert (usage.used, usage.held) == (0, 3000)
    assert assert_books_balance(tenant_a, backend) == Decimal(10) - 2 * ESTIMATE


@pytest.mark.django_db
def test_a_request_id_held_before_keeps_its_one_hold(redis_backend, key_a, tenant_a, redis_client):
    factories.topup(tenant_a, "1")
    (first,) = authorize_holds([prepared(key_a.row, "again")])
    redis_client.delete(hold_key(tenant_a.pk, "again"))  # Redis lost the hold's key, PostgreSQL has its row

    answers = authorize_holds([prepared(key_a.row, r) for r in ("new-1", "again", "new-2")])

    assert all(isinstance(a, AuthorizeResult) for a in answers), answers
    assert (answers[1].hold.id, answers[1].hold.created) == (first.hold.id, False)
    assert [a.hold.created for a in (answers[0], answers[2])] == [True, True]
    assert Hold.objects.count() == 3 and LedgerEntry.objects.filter(kind="hold").count() == 3
    assert assert_books_balance(tenant_a, redis_backend) == Decimal(1) - 3 * ESTIMATE


@pytest.mark.django_db
def test_postgresql_refuses_what_a_stale_cache_admitted(redis_backend, key_a, tenant_a, redis_client):
    factories.topup(tenant_a, str(ESTIMATE * 2))
    authorize_holds([prepared(key_a.row, "warm")])  # seeds the keys
    redis_client.incrby(balance_key(tenant_a.pk), 1_000_000_000)  # the cache is far above the ledger

    answers = authorize_holds([prepared(key_a.row, f"s-{i}") for i in range(3)])

    assert [isinstance(a, AuthorizeResult) for a in answers] == [True, False, False]
    assert {a.code for a in answers[1:]} == {"insufficient_balance"}
    wallet = Wallet.objects.get(tenant=tenant_a).balance
    assert wallet == 0 == ledger_sum(tenant_id=tenant_a.pk)
    assert Hold.objects.filter(status="open").count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.parametrize("flush", [False, True], ids=["steady", "flushdb"])
def test_concurrent_groups_never_spend_more_than_the_balance(backend, tenant_a, redis_client, flush):
    if flush and backend == "db":
        pytest.skip("no Redis to lose")
    key, _ = factories.issue_api_key(tenant_a)
    factories.topup(tenant_a, str(ESTIMATE * 50))
    threads, per_thread, group = 8, 5, 5  # 200 holds asked for, room for 50
    answers: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            for round_ in range(per_thread):
                ids = [f"c-{index}-{round_}-{i}" for i in range(group)]
                got = authorize_holds([prepared(key, request_id) for request_id in ids])
                with lock:
                    answers.extend(got)
                    flush_now = flush and index == 0 and round_ == 1
                if flush_now:
                    redis_client.flushdb()  # the test's own Redis database: keys are seeded again mid-load
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)

    assert not errors, errors
    admitted = [a for a in answers if isinstance(a, AuthorizeResult)]
    refused = [a for a in answers if isinstance(a, AuthorizeRefused)]
    assert len(admitted) == 50 and len(refused) == 150
    assert {a.code for a in refused} == {"insufficient_balance"}
    assert len({a.hold.id for a in admitted}) == 50 == Hold.objects.filter(status="open").count()
    assert assert_books_balance(tenant_a, backend) == 0


def _wait_for_lock_waiters(count: int) -> None:
    with connections["default"].cursor() as cursor:
        for _ in range(500):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0] >= count:
                return
            time.sleep(0.01)
    raise AssertionError(f"fewer than {count} sessions waiting on a lock")


@pytest.mark.django_db(transaction=True)
def test_keys_seeded_while_a_group_is_in_flight_include_it(redis_backend, key_a, tenant_a, redis_client):
    """A group holds the tenant's balance lock from its script to its commit, so keys seeded
    meanwhile (after a lost Redis) wait for it and include its holds."""
    factories.topup(tenant_a, "1")
    authorize_holds([prepared(key_a.row, "warm")])
    release = threading.Event()
    results: dict[str, object] = {}

    def blocker() -> None:  # keeps the wallet row locked: the group stops between script and commit
        with transaction.atomic():
            Wallet.objects.select_for_update().get(tenant=tenant_a)
            results["locked"] = True
            release.wait(30)
        connections.close_all()

    def run(name: str, request_ids: list[str]) -> None:
        try:
            results[name] = authorize_holds([prepared(key_a.row, r) for r in request_ids])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=blocker)]
    threads[0].start()
    while "locked" not in results:
        time.sleep(0.01)
    threads.append(threading.Thread(target=run, args=("group", ["in-1", "in-2", "in-3"])))
    threads[1].start()
    _wait_for_lock_waiters(1)  # the group ran its script and waits for the wallet row
    redis_client.flushdb()
    threads.append(threading.Thread(target=run, args=("alone", ["after"])))
    threads[2].start()
    _wait_for_lock_waiters(2)  # seeding waits for the group's shared lock (or the wallet row)
    release.set()
    for thread in threads:
        thread.join(timeout=60)

    assert all(isinstance(a, AuthorizeResult) for a in [*results["group"], *results["alone"]])
    assert assert_books_balance(tenant_a, redis_backend) == Decimal(1) - 5 * ESTIMATE
