"""POST /api/v1/events/batch: up to the limit, per-item results in input order, nothing dropped."""

from decimal import Decimal

import pytest
from django.test import override_settings

from billing.models import LedgerEntry
from metering.models import UsageEvent
from tests.assertions import assert_charged_once
from tests.factories import EventBodyFactory, event_bodies

pytestmark = pytest.mark.django_db


def test_a_thousand_events_in_one_batch(key_a, tenant_a):
    events = event_bodies(1000)
    response = key_a.post("/api/v1/events/batch", {"events": events})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1000, 0, 0)
    assert [item["index"] for item in body["results"]] == list(range(1000))
    assert [item["request_id"] for item in body["results"]] == [event["request_id"] for event in events]
    assert {item["status"] for item in body["results"]} == {"accepted"}
    stored = dict(UsageEvent.objects.filter(tenant=tenant_a).values_list("request_id", "id"))
    assert {item["request_id"]: item["id"] for item in body["results"]} == stored
    # One charge for the whole batch, equal to the sum of the stored costs.
    assert assert_charged_once(tenant_a, events=1000) == -1000 * Decimal("0.0075")


def test_a_json_array_is_accepted_as_the_batch(key_a):
    response = key_a.post("/api/v1/events/batch", event_bodies(2))
    assert response.status_code == 200
    assert response.json()["accepted"] == 2


def test_mixed_batch_keeps_input_order_and_stores_the_valid_items(key_a, tenant_a):
    valid = event_bodies(3)
    already = EventBodyFactory()
    key_a.post("/api/v1/events", already)
    items = [
        valid[0],
        {**EventBodyFactory(), "input_tokens": -1},
        already,
        "not an object",
        valid[1],
        {**EventBodyFactory(), "surprise": 1},
        {**already, "output_tokens": 1},
        valid[2],
        valid[0],
    ]
    response = key_a.post("/api/v1/events/batch", {"events": items})
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [
        "accepted", "rejected", "duplicate", "rejected", "accepted", "rejected", "rejected", "accepted", "duplicate",
    ]  # fmt: skip
    assert results[1]["error"] == {
        "code": "invalid_field",
        "field": "input_tokens",
        "message": "input_tokens must be >= 0, got -1.",
    }
    assert results[3]["error"]["field"] is None
    assert "object" in results[3]["error"]["message"]
    assert "request_id" not in results[3]
    assert results[5]["error"]["code"] == "unknown_field"
    assert results[5]["error"]["field"] == "surprise"
    assert results[6]["error"]["code"] == "request_id_conflict"
    assert results[8]["id"] == results[0]["id"]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 2, 4)
    stored = set(UsageEvent.objects.filter(tenant=tenant_a).values_list("request_id", flat=True))
    assert stored == {already["request_id"], *(event["request_id"] for event in valid)}


def test_all_rejected_batch_stores_and_charges_nothing(key_a):
    response = key_a.post("/api/v1/events/batch", {"events": [{"request_id": "x"}, {"model": "m"}]})
    assert response.status_code == 200
    assert response.json()["rejected"] == 2
    assert UsageEvent.objects.count() == 0
    assert LedgerEntry.objects.count() == 0


def test_one_over_the_limit_is_413_and_stores_nothing(key_a):
    response = key_a.post("/api/v1/events/batch", {"events": event_bodies(1001)})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "batch_too_large"
    assert "1000" in error["message"]
    assert "1001" in error["message"]
    assert error["details"] == {"limit": 1000, "received": 1001}
    assert UsageEvent.objects.count() == 0


@override_settings(INGEST_MAX_BATCH=5)
def test_the_limit_is_a_setting(key_a):
    assert key_a.post("/api/v1/events/batch", {"events": event_bodies(5)}).status_code == 200
    assert key_a.post("/api/v1/events/batch", {"events": event_bodies(6)}).status_code == 413


@pytest.mark.parametrize("body", [{"events": []}, []])
def test_empty_batch(key_a, body):
    response = key_a.post("/api/v1/events/batch", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_batch"


@pytest.mark.parametrize(
    "body", [{"events": {"request_id": "x"}}, {"events": "x"}, {"events": None}, {}, {"event": []}]
)
def test_events_must_be_a_list(key_a, body):
    response = key_a.post("/api/v1/events/batch", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"] == {"field": "events"}
    assert "events" in error["message"]


@pytest.mark.parametrize("extra", ["tenant", "tenant_id", "api_key"])
def test_unknown_top_level_fields_are_refused(key_a, extra):
    response = key_a.post("/api/v1/events/batch", {"events": event_bodies(1), extra: "globex"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_field"
    assert extra in response.json()["error"]["message"]
    assert UsageEvent.objects.count() == 0
