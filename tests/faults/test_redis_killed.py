"""Redis (the balance store) SIGKILLed in the middle of authorize-hold + event flows, then
restarted empty on the same port; once a single server, once every master of a Redis Cluster
(restarted empty, each node keeping its slots).

While it is down the API fails closed: authorize answers 503 balance_unavailable (never a
yes it cannot back), and ingest answers the same 503 and stores nothing (its Redis mirror runs
before COMMIT, so the transaction rolls back); clients retry the same request_id. After the
restart the keys are seeded again from PostgreSQL: no usage lost or doubled, zero drift, and
the balance never spent beyond what was there.
"""

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connections
from rest_framework.test import APIClient

from billing.models import Hold, LedgerEntry, Wallet
from billing.money import round_to_ledger
from billing.selectors import ledger_sum
from billing.services.balances.keys import balance_key
from billing.services.reconcile import balances_reconcile
from metering.models import UsageEvent
from metering.services.authorize import authorize_caches_clear
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

THREADS = 10
EST_IN, MAX_OUT = 1000, 500
ESTIMATE = Decimal("0.0075")  # gpt-4o: 1000 x 2.5 + 500 x 10 per 1M tokens
BALANCE = ESTIMATE * 40  # room for 40 estimates: the load runs out of money after the restart
DEADLINE = 90  # seconds for the whole load


@dataclass
class Load:
    secret: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    admitted: list[str] = field(default_factory=list)
    # (sent, answered) of each admitted request (monotonic): a request sent while Redis is down
    # may wait in the client's reconnect and be decided after the restart, which is fine.
    admitted_sent: list[tuple[float, float]] = field(default_factory=list)
    accepted: dict[str, Decimal] = field(default_factory=dict)  # request_id -> cost answered
    answers: dict[tuple[str, int], int] = field(default_factory=dict)  # (path, status) -> count
    codes: set[str] = field(default_factory=set)  # error codes of the 503s
    errors: list[str] = field(default_factory=list)
    refused: int = 0

    def count(self, path: str, status: int, body: bytes) -> None:
        with self.lock:
            self.answers[(path, status)] = self.answers.get((path, status), 0) + 1
            if status == 503:
                self.codes.add(body.decode(errors="replace"))


def _post_until_answered(load: Load, client: APIClient, path: str, body: dict, stop_at: float):
    """POST, retrying the same body while the store is unavailable (what a client does on 503):
    (the answer, (when its request was sent, when it was answered)), or (None, (0, 0)) at the deadline."""
    while time.monotonic() < stop_at:
        sent = time.monotonic()
        answer = client.post(path, body, format="json")
        load.count(path, answer.status_code, answer.content)
        if answer.status_code != 503:
            return answer, (sent, time.monotonic())
        time.sleep(0.05)
    return None, (0.0, 0.0)


def _flows(load: Load, index: int, stop_at: float) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {load.secret}")
    try:
        for n in range(1000):
            request_id = f"r-{index}-{n}"
            hold = {
                "model": "gpt-4o",
                "estimated_input_tokens": EST_IN,
                "max_output_tokens": MAX_OUT,
                "request_id": request_id,
                "hold": True,
            }
            answer, sent = _post_until_answered(load, client, "/api/v1/authorize", hold, stop_at)
            if answer is None:
                load.errors.append(f"{request_id}: authorize still unavailable at the deadline")
                return
            if answer.status_code == 402:
                with load.lock:
                    load.refused += 1
                return
            if answer.status_code != 200:
                load.errors.append(f"authorize {answer.status_code}: {answer.content[:200]!r}")
                return
            with load.lock:
                load.admitted.append(request_id)
                load.admitted_sent.append(sent)
            event = {
                "request_id": request_id,
                "model": "gpt-4o",
                "input_tokens": 500 + (index * 37 + n * 11) % 500,
                "output_tokens": (index * 13 + n * 7) % MAX_OUT,
            }
            stored, _ = _post_until_answered(load, client, "/api/v1/events", event, stop_at)
            if stored is None or stored.status_code not in (200, 201):
                load.errors.append(f"event {request_id}: {stored and stored.status_code} {stored and stored.content!r}")
                return
            with load.lock:
                load.accepted[request_id] = Decimal(stored.json()["cost"])
    except Exception as exc:
        load.errors.append(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        connections.close_all()


def test_redis_killed_mid_load_fails_closed_and_reconciles(settings, balance_redis, tenant_a, anonymous):
    private_redis = balance_redis  # one server, or every master of a Redis Cluster
    settings.REDIS_URL = private_redis.url(0)
    settings.REDIS_CLUSTER = private_redis.cluster
    settings.BALANCE_BACKEND = "redis"
    settings.AUTHORIZE_CACHE_SECONDS = 0
    settings.BALANCE_REDIS_TIMEOUT = 0.5
    authorize_caches_clear()
    factories.topup(tenant_a, str(BALANCE))
    _, secret = factories.issue_api_key(tenant_a)
    load = Load(secret=secret)
    stop_at = time.monotonic() + DEADLINE

    workers = [threading.Thread(target=_flows, args=(load, i, stop_at), daemon=True) for i in range(THREADS)]
    for worker in workers:
        worker.start()
    # Mid-load: a third of the money admitted, then Redis dies without a word.
    deadline = time.monotonic() + 60
    while len(load.admitted) < 12 and time.monotonic() < deadline and not load.errors:
        time.sleep(0.01)
    assert len(load.admitted) >= 12, load.errors[:3]
    private_redis.kill()
    killed_at = time.monotonic()
    # Down: requests fail closed with 503 (the flows keep retrying), and the portal says it is not ready.
    while sum(n for (_, status), n in load.answers.items() if status == 503) < 2 * THREADS:
        assert time.monotonic() < deadline, load.answers
        time.sleep(0.02)
    ready = anonymous.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    # The flows may all be retrying their events when Redis dies: a hold asked now must fail closed.
    probe = APIClient()
    probe.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = {"model": "gpt-4o", "estimated_input_tokens": EST_IN, "max_output_tokens": MAX_OUT, "hold": True}
    refused = probe.post("/api/v1/authorize", {**body, "request_id": "while-down"}, format="json")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "balance_unavailable", refused.content
    time.sleep(0.3)
    restarted_at = time.monotonic()
    private_redis.start()  # same port, empty
    for worker in workers:
        worker.join(timeout=max(stop_at - time.monotonic(), 1) + 10)
    assert not any(worker.is_alive() for worker in workers), "a flow hung"
    assert not load.errors, load.errors[:5]
    # No request sent while the store was down was admitted.
    assert not [(s, a) for s, a in load.admitted_sent if killed_at < s and a < restarted_at]

    # The flows saw 503 balance_unavailable while Redis was down (the probe above: authorize did
    # too); nothing else failed.
    assert {status for (_, status) in load.answers} <= {200, 201, 402, 503}
    assert all('"balance_unavailable"' in body for body in load.codes), load.codes
    assert load.refused >= 1, "the money ran out after the restart"
    assert anonymous.get("/readyz").status_code == 200

    # Stored events == the accepted request_ids, once each; every hold settled exactly once.
    events = list(UsageEvent.objects.filter(tenant=tenant_a))
    assert sorted(e.request_id for e in events) == sorted(load.accepted)
    assert sorted(load.accepted) == sorted(load.admitted)
    assert {e.request_id: round_to_ledger(e.cost) for e in events} == {
        rid: round_to_ledger(cost) for rid, cost in load.accepted.items()
    }
    holds = list(Hold.objects.filter(tenant=tenant_a))
    assert len(holds) == len(events) and all(h.status == Hold.Status.SETTLED for h in holds)
    releases = LedgerEntry.objects.filter(tenant=tenant_a, kind="release").values_list("idempotency_key", flat=True)
    assert sorted(releases) == sorted(f"release:{h.pk}" for h in holds)
    usage = LedgerEntry.objects.filter(tenant=tenant_a, kind="usage")
    assert sorted(-u.amount for u in usage) == sorted(round_to_ledger(e.cost) for e in events)

    # wallet == sum(ledger) == what was topped up minus what was charged; never below zero
    # (usage stays within each hold here, so the documented overage bound is zero).
    spent = sum((round_to_ledger(e.cost) for e in events), Decimal(0))
    wallet = Wallet.objects.get(tenant=tenant_a).balance
    assert wallet == ledger_sum(tenant_id=tenant_a.pk) == BALANCE - spent
    assert Decimal(0) <= wallet
    assert all(h.overage == 0 for h in holds)

    # Zero drift: the restarted Redis was seeded from PostgreSQL and equals it.
    report = balances_reconcile(tenant_id=tenant_a.pk, fix=False)
    assert report.clean, (report.wallets, report.drifts)
    assert int(private_redis.client().get(balance_key(tenant_a.pk))) == int(wallet * 1_000_000)
    call_command("reconcile", "--check", stdout=(out := _Buffer()))
    assert ": 0 drift(s)." in out.text


def test_ingest_with_redis_down_answers_503_and_stores_nothing(settings, balance_redis, tenant_a, key_a):
    """No hold, no authorize: a plain event while the store is down is refused whole, and its
    retry after the restart is stored and charged once."""
    private_redis = balance_redis
    settings.REDIS_URL = private_redis.url(0)
    settings.REDIS_CLUSTER = private_redis.cluster
    settings.BALANCE_BACKEND = "redis"
    factories.topup(tenant_a, "1.00")
    event = {"request_id": "plain-1", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}
    private_redis.kill()

    down = key_a.post("/api/v1/events", event)
    batch = key_a.post("/api/v1/events/batch", {"events": [{**event, "request_id": "plain-2"}]})

    assert down.status_code == 503, down.content
    assert down.json()["error"]["code"] == "balance_unavailable"
    assert batch.status_code == 503, batch.content
    assert not UsageEvent.objects.filter(tenant=tenant_a).exists()
    assert LedgerEntry.objects.filter(tenant=tenant_a, kind="usage").count() == 0
    private_redis.start()
    assert key_a.post("/api/v1/events", event).status_code == 201
    assert key_a.post("/api/v1/events", event).status_code == 200  # the client's second retry: a duplicate
    assert UsageEvent.objects.filter(tenant=tenant_a).count() == 1
    assert Wallet.objects.get(tenant=tenant_a).balance == ledger_sum(tenant_id=tenant_a.pk) == Decimal("0.9965")
    assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass
