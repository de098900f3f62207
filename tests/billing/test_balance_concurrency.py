"""Invariant 2, no overspend, and invariant 3, the ledger is the truth, under real concurrency.

50 threads run authorize (hold) + usage event flows against one prepaid balance, over HTTP
through the real views, on real PostgreSQL and Redis, until the money runs out. Each runs on
both balance backends; one run empties the Redis database (FLUSHDB) in the middle of the load.
"""

import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from rest_framework.test import APIClient

from billing.models import Hold, LedgerEntry, Wallet
from billing.money import round_to_ledger
from billing.selectors import ledger_sum
from billing.services.balances.base import LOCK_CLASS
from billing.services.balances.keys import balance_key
from billing.services.ledger import ledger_post
from billing.services.quotas import quota_create
from billing.services.reconcile import balances_reconcile
from metering.models import UsageEvent
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

THREADS = 50
EST_IN, MAX_OUT = 1000, 500
ESTIMATE = Decimal("0.0075")  # gpt-4o: 1000 x 2.5 + 500 x 10, per 1M tokens
BALANCE = ESTIMATE * 60  # 0.45: room for 60 estimates, so most threads meet a 402


@dataclass
class Load:
    secret: str
    overage: bool = False  # actual input tokens up to 20 % above the estimate
    flush_after: int | None = None  # FLUSHDB once this many flows were admitted
    lock: threading.Lock = field(default_factory=threading.Lock)
    admitted: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)  # (request_id, hold, balance after)
    charged: dict[str, Decimal] = field(default_factory=dict)
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    flushed: bool = False
    samples: list[tuple[Decimal, int | None]] = field(default_factory=list)


def _flow_worker(load: Load, index: int, redis_client) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {load.secret}")
    rng = random.Random(index)
    try:
        for n in range(1000):
            request_id = f"flow-{index}-{n}"
            body = {
                "model": "gpt-4o",
                "estimated_input_tokens": EST_IN,
                "max_output_tokens": MAX_OUT,
                "request_id": request_id,
                "hold": True,
            }
            answer = client.post("/api/v1/authorize", body, format="json")
            if answer.status_code == 402:
                with load.lock:
                    load.refused += 1
                return
            if answer.status_code != 200:
                load.errors.append(f"authorize {answer.status_code}: {answer.content[:200]!r}")
                return
            data = answer.json()
            with load.lock:
                load.admitted.append((request_id, Decimal(data["hold"]["amount"]), Decimal(data["balance"])))
                flush_now = load.flush_after is not None and not load.flushed and len(load.admitted) >= load.flush_after
                if flush_now:
                    load.flushed = True
            if flush_now:
                redis_client.flushdb()  # the test's own Redis database; never FLUSHALL
            top = int(EST_IN * 1.2) if load.overage else EST_IN
            event = {
                "request_id": request_id,
                "model": "gpt-4o",
                "input_tokens": rng.randint(0, top),
                "output_tokens": rng.randint(0, MAX_OUT),
            }
            stored = client.post("/api/v1/events", event, format="json")
            if stored.status_code != 201:
                load.errors.append(f"event {stored.status_code}: {stored.content[:200]!r}")
                return
            with load.lock:
                load.charged[request_id] = Decimal(stored.json()["cost"])
    except Exception as exc:
        load.errors.append(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        connections.close_all()


def _monitor(load: Load, tenant_id: int, redis_client, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            balance = Wallet.objects.filter(tenant_id=tenant_id).values_list("balance", flat=True).first()
            cached = redis_client.get(balance_key(tenant_id))
            load.samples.append((balance, int(cached) if cached is not None else None))
            time.sleep(0.005)
    finally:
        connection.close()


def _run(load: Load, tenant_id: int, redis_client) -> None:
    stop = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(load, tenant_id, redis_client, stop))
    workers = [threading.Thread(target=_flow_worker, args=(load, i, redis_client)) for i in range(THREADS)]
    monitor.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    stop.set()
    monitor.join()
    assert not any(worker.is_alive() for worker in workers), "a flow hung"
    assert not load.errors, load.errors[:5]


def _assert_ledger_is_the_truth(tenant) -> Decimal:
    events = list(UsageEvent.objects.filter(tenant=tenant))
    usage = LedgerEntry.objects.filter(tenant=tenant, kind="usage")
    # One single-event batch per flow: each charge is that event's cost rounded once.
    assert sorted(-e.amount for e in usage) == sorted(round_to_ledger(e.cost) for e in events)
    holds = list(Hold.objects.filter(tenant=tenant))
    assert all(h.status == Hold.Status.SETTLED for h in holds), "every admitted flow settled its hold"
    assert len(holds) == len(events)
    releases = LedgerEntry.objects.filter(tenant=tenant, kind="release")
    assert sorted(r.idempotency_key for r in releases) == sorted(f"release:{h.pk}" for h in holds)
    assert {h.request_id: h.settled_amount for h in holds} == {e.request_id: round_to_ledger(e.cost) for e in events}
    balance = Wallet.objects.get(tenant=tenant).balance
    assert balance == ledger_sum(tenant_id=tenant.pk)
    spent = sum((round_to_ledger(e.cost) for e in events), Decimal(0))
    assert balance == BALANCE - spent
    return spent


@pytest.mark.parametrize("flush", [False, True], ids=["steady", "flushdb-mid-load"])
def test_concurrent_flows_never_overspend(backend, flush, tenant_a, redis_client):
    if flush and backend == "db":
        pytest.skip("FLUSHDB concerns the Redis backend")
    factories.topup(tenant_a, str(BALANCE))
    _, secret = factories.issue_api_key(tenant_a)
    load = Load(secret=secret, flush_after=20 if flush else None)

    _run(load, tenant_a.pk, redis_client)

    assert load.refused >= 1, "the money ran out"
    assert load.charged.keys() == {request_id for request_id, _, _ in load.admitted}
    # No admission ever left the balance below zero, and never more was admitted than was there.
    assert all(after >= 0 for _, _, after in load.admitted)
    assert all(balance >= 0 for balance, _ in load.samples)
    assert all(cached is None or cached >= 0 for _, cached in load.samples)
    spent = _assert_ledger_is_the_truth(tenant_a)
    assert spent == sum((round_to_ledger(cost) for cost in load.charged.values()), Decimal(0))
    assert spent <= BALANCE
    if flush:
        assert load.flushed
    if backend == "redis":
        # The keys were re-seeded after the flush and equal PostgreSQL: zero drift.
        report = balances_reconcile(tenant_id=tenant_a.pk, fix=False)
        assert report.clean, (report.wallets, report.drifts)
        cached = redis_client.get(balance_key(tenant_a.pk))
        assert cached is not None
        assert int(cached) == int(Wallet.objects.get(tenant=tenant_a).balance * 1_000_000)


def test_overage_is_allowed_bounded_and_recorded(backend, tenant_a, redis_client):
    """Actual usage up to 20 % above the estimated input: admission still never goes below zero;
    what settlement adds beyond the holds is each request's own estimation error, on its hold."""
    factories.topup(tenant_a, str(BALANCE))
    _, secret = factories.issue_api_key(tenant_a)
    load = Load(secret=secret, overage=True)

    _run(load, tenant_a.pk, redis_client)

    assert all(after >= 0 for _, _, after in load.admitted)
    spent = _assert_ledger_is_the_truth(tenant_a)
    holds = list(Hold.objects.filter(tenant=tenant_a))
    for hold in holds:
        assert hold.overage == max(hold.settled_amount - hold.amount, Decimal(0))
    # Beyond the balance by at most the overage of the flows in flight when it ran out: each at
    # most one request's estimation error (200 extra input tokens x 2.5 per 1M = 0.0005).
    max_error = Decimal(200) * Decimal("2.5") / 1_000_000
    assert spent - BALANCE <= THREADS * max_error
    assert sum(h.overage for h in holds) <= len(holds) * max_error
    if backend == "redis":
        assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean


def test_concurrent_holds_never_exceed_a_hard_quota(backend, tenant_a, redis_client):
    """The quota gate is as race-free as the money gate: 50 threads, room for exactly 20 holds."""
    factories.topup(tenant_a, "100.00")
    quota_create(tenant=tenant_a, metric="tokens", window="day", limit=Decimal(20 * 1500), actor_label="t")
    _, secret = factories.issue_api_key(tenant_a)
    answers: list[int] = []
    start = threading.Barrier(THREADS)

    def one(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        body = {"model": "gpt-4o", "estimated_input_tokens": EST_IN, "max_output_tokens": MAX_OUT, "hold": True}
        try:
            start.wait()
            for n in range(2):
                answer = client.post("/api/v1/authorize", {**body, "request_id": f"q-{index}-{n}"}, format="json")
                answers.append(answer.status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(set(answers)) == [200, 402]
    assert answers.count(200) == 20 == Hold.objects.filter(tenant=tenant_a).count()
    assert (
        Wallet.objects.get(tenant=tenant_a).balance == Decimal(100) - 20 * ESTIMATE == ledger_sum(tenant_id=tenant_a.pk)
    )
    if backend == "redis":
        assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean


def _waiting_for_exclusive_balance_lock(tenant_id: int) -> bool:
    """Whether some backend waits, ungranted, for the tenant's balance lock in exclusive mode
    (pg_locks: a two-key advisory lock is classid = first key, objid = second, objsubid = 2)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT EXISTS (
                SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND objsubid = 2
                  AND mode = 'ExclusiveLock' AND NOT granted
            )
            """,
            [LOCK_CLASS, tenant_id],
        )
        return cursor.fetchone()[0]


def test_seeding_waits_for_a_money_change_in_flight(redis_backend, redis_client, tenant_a):
    """The seeding race, deterministically: a top-up has moved PostgreSQL and found bal:{t} absent
    (so mirrored nothing) but not committed yet. A concurrent authorize finds the key cold and
    seeds; the seed must wait for that commit and include it, neither missing nor doubling it."""
    factories.topup(tenant_a, "1.00")
    _, secret = factories.issue_api_key(tenant_a)
    in_flight, release = threading.Event(), threading.Event()
    answer: dict = {}

    def top_up() -> None:
        try:
            with transaction.atomic():
                ledger_post(
                    tenant_id=tenant_a.pk, currency="USD", kind="topup", amount=Decimal(2), idempotency_key="slow"
                )
                in_flight.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    def authorize() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            body = {"model": "gpt-4o", "estimated_input_tokens": EST_IN, "max_output_tokens": MAX_OUT}
            answer["response"] = client.post("/api/v1/authorize", body, format="json")
        finally:
            connections.close_all()

    writer = threading.Thread(target=top_up)
    writer.start()
    assert in_flight.wait(timeout=30)
    assert redis_client.get(balance_key(tenant_a.pk)) is None  # cold: the top-up mirrored nothing
    reader = threading.Thread(target=authorize)
    reader.start()
    try:
        # Proof, not a pause: PostgreSQL shows the seed queued for the tenant's lock in exclusive
        # mode behind the top-up's shared hold, while the top-up is still uncommitted.
        deadline = time.monotonic() + 30
        while not _waiting_for_exclusive_balance_lock(tenant_a.pk):
            assert reader.is_alive(), "the seed finished without waiting for the transaction in flight"
            assert time.monotonic() < deadline, "the seed never waited for the tenant's balance lock"
            time.sleep(0.01)
        assert reader.is_alive() and "response" not in answer
    finally:
        release.set()
    writer.join(timeout=30)
    reader.join(timeout=30)
    assert answer["response"].status_code == 200
    assert answer["response"].json()["balance"] == "3.00"
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 3_000_000
    assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean
