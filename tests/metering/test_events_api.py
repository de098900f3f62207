"""POST /api/v1/events: one event, stored once, rated once."""

from decimal import Decimal

import pytest

from metering.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=False)


def event(**overrides):
    body = {"request_id": "req-1", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500}
    body.update(overrides)
    return body


def test_event_is_stored_and_rated(key_a, tenant_a):
    response = key_a.post("/api/v1/events", event(cached_input_tokens=400))
    assert response.status_code == 201, response.content
    body = response.json()
    # 600 uncached x 2.5 + 400 cached x 1.25 + 500 out x 10, per 1M tokens
    assert Decimal(body["cost"]) == Decimal("0.007")
    assert body["currency"] == "USD"
    assert body["duplicate"] is False
    stored = UsageEvent.objects.get(pk=body["id"])
    assert stored.tenant_id == tenant_a.pk
    assert stored.cost == Decimal("0.007")
    assert stored.price_id is not None


def test_replay_with_same_body_is_duplicate(key_a):
    first = key_a.post("/api/v1/events", event())
    second = key_a.post("/api/v1/events", event())
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["cost"] == first.json()["cost"]
    assert UsageEvent.objects.count() == 1


def test_same_request_id_with_other_body_conflicts(key_a):
    key_a.post("/api/v1/events", event())
    response = key_a.post("/api/v1/events", event(output_tokens=501))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "request_id_conflict"
    assert UsageEvent.objects.get().output_tokens == 500
