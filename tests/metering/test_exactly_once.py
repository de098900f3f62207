"""Invariant 1, exactly once: one (tenant, request_id) is stored, rated and charged once.

Whatever the path (replays, concurrent retries from real threads, batch splits, single and
batch mixed, repeats inside one batch), the result is one event, one cost, one wallet charge.
"""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from billing.models import LedgerEntry
from metering.models import UsageEvent
from tests.assertions import assert_charged_once, assert_wallet_reconciles
from tests.conftest import Credential
from tests.factories import EventBodyFactory, event_bodies

pytestmark = pytest.mark.django_db

# 1000 input x 2.5 + 500 output x 10, per 1M tokens (the gpt-4o price in conftest's plan)
COST = Decimal("0.0075")


def _batch(cred: Credential, events: list[dict]):
    response = cred.post("/api/v1/events/batch", {"events": events})
    assert response.status_code == 200, response.content
    return response.json()


def test_same_request_id_twice_is_stored_and_charged_once(key_a, tenant_a):
    body = EventBodyFactory(request_id="twice")
    first = key_a.post("/api/v1/events", body)
    second = key_a.post("/api/v1/events", body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["duplicate"] is False
    assert second.json()["duplicate"] is True
    assert second.json()["id"] == first.json()["id"]
    assert Decimal(first.json()["cost"]) == Decimal(second.json()["cost"]) == COST
    assert assert_charged_once(tenant_a) == -COST


def test_split_across_batches(key_a, tenant_a):
    events = event_bodies(6)
    first = _batch(key_a, events[:4])
    second = _batch(key_a, events[2:])  # two repeats, two new
    assert [r["status"] for r in first["results"]] == ["accepted"] * 4
    assert [r["status"] for r in second["results"]] == ["duplicate", "duplicate", "accepted", "accepted"]
    assert second["results"][0]["id"] == first["results"][2]["id"]
    assert UsageEvent.objects.filter(tenant=tenant_a).count() == 6
    charges = LedgerEntry.objects.filter(tenant=tenant_a, kind="usage")
    assert sorted(entry.amount for entry in charges) == [-4 * COST, -2 * COST]


def test_single_then_batch(key_a, tenant_a):
    body = EventBodyFactory()
    single = key_a.post("/api/v1/events", body)
    assert single.status_code == 201
    batch = _batch(key_a, [body])
    assert batch["results"] == [
        {"index": 0, "status": "duplicate", "request_id": body["request_id"], "id": single.json()["id"]}
    ]
    assert (batch["accepted"], batch["duplicates"], batch["rejected"]) == (0, 1, 0)
    assert_charged_once(tenant_a)


def test_batch_then_single(key_a, tenant_a):
    body = EventBodyFactory()
    batch = _batch(key_a, [body])
    assert batch["results"][0]["status"] == "accepted"
    single = key_a.post("/api/v1/events", body)
    assert single.status_code == 200
    assert single.json()["duplicate"] is True
    assert single.json()["id"] == batch["results"][0]["id"]
    assert Decimal(single.json()["cost"]) == COST
    assert_charged_once(tenant_a)


def test_repeated_inside_one_batch(key_a, tenant_a):
    body = EventBodyFactory()
    batch = _batch(key_a, [body, dict(body), dict(body)])
    assert [r["status"] for r in batch["results"]] == ["accepted", "duplicate", "duplicate"]
    assert len({r["id"] for r in batch["results"]}) == 1
    assert (batch["accepted"], batch["duplicates"], batch["rejected"]) == (1, 2, 0)
    assert_charged_once(tenant_a)


def test_same_id_other_body_single_is_409(key_a, tenant_a):
    body = EventBodyFactory()
    assert key_a.post("/api/v1/events", body).status_code == 201
    response = key_a.post("/api/v1/events", {**body, "output_tokens": 501})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "request_id_conflict"
    assert error["details"] == {"field": "request_id"}
    assert body["request_id"] in error["message"]
    assert UsageEvent.objects.get(tenant=tenant_a).output_tokens == 500
    assert_charged_once(tenant_a)


def test_same_id_other_body_in_batch_is_rejected_with_reason(key_a, tenant_a):
    body = EventBodyFactory()
    key_a.post("/api/v1/events", body)
    batch = _batch(key_a, [{**body, "model": "gpt-4o-mini"}, EventBodyFactory()])
    conflict, fresh = batch["results"]
    assert conflict["status"] == "rejected"
    assert conflict["error"]["code"] == "request_id_conflict"
    assert conflict["error"]["field"] == "request_id"
    assert fresh["status"] == "accepted"
    assert (batch["accepted"], batch["duplicates"], batch["rejected"]) == (1, 0, 1)


def test_repeat_with_other_body_inside_one_batch_is_rejected(key_a, tenant_a):
    body = EventBodyFactory()
    batch = _batch(key_a, [body, {**body, "input_tokens": 999}])
    assert batch["results"][0]["status"] == "accepted"
    assert batch["results"][1]["status"] == "rejected"
    assert batch["results"][1]["error"]["code"] == "request_id_conflict"
    assert_charged_once(tenant_a)


def test_same_id_in_two_tenants_is_two_events(key_a, key_b, tenant_a, tenant_b):
    body = EventBodyFactory(request_id="shared-id")
    first = key_a.post("/api/v1/events", body)
    second = key_b.post("/api/v1/events", body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert_charged_once(tenant_a)
    assert_charged_once(tenant_b)


def _run_threads(count: int, work) -> list:
    """Run `work(i)` in `count` real threads released together; each closes its DB connection."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_posts_store_and_charge_once(key_a, tenant_a):
    body = EventBodyFactory(request_id="concurrent")

    def post(_: int):
        # A client per thread: the Django test client handles the request in this thread,
        # which has its own database connection.
        response = Credential(key_a.row, key_a.secret).post("/api/v1/events", body)
        return response.status_code, response.json()

    results = _run_threads(50, post)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 49 + [201]
    assert len({payload["id"] for _, payload in results}) == 1
    assert sum(payload["duplicate"] for _, payload in results) == 49
    assert_charged_once(tenant_a)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_batches_in_opposite_orders(key_a, tenant_a):
    """Batches sharing ids in different orders must not deadlock, and each id is stored once."""
    events = event_bodies(40)

    def post(i: int):
        ordered = events if i % 2 == 0 else list(reversed(events))
        response = Credential(key_a.row, key_a.secret).post("/api/v1/events/batch", {"events": ordered})
        return response.status_code, response.json()

    results = _run_threads(8, post)
    assert [status for status, _ in results] == [200] * 8, results
    assert sum(payload["accepted"] for _, payload in results) == 40
    assert sum(payload["duplicates"] for _, payload in results) == 40 * 7
    assert UsageEvent.objects.filter(tenant=tenant_a).count() == 40
    stored_cost = sum(event.cost for event in UsageEvent.objects.filter(tenant=tenant_a))
    assert stored_cost == 40 * COST
    charged = sum(entry.amount for entry in LedgerEntry.objects.filter(tenant=tenant_a, kind="usage"))
    assert charged == -40 * COST
    assert assert_wallet_reconciles(tenant_a) == -40 * COST
